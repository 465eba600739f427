package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker"
	"github.com/mcpbroker/mcpbroker/broker/store"
)

const sessionsUsage = `usage:
  mcpbroker sessions list [--data DIR] [--json]
  mcpbroker sessions show ID [--data DIR]
  mcpbroker sessions revoke ID [--data DIR]
`

// sessionsCmd lists, shows and revokes the broker's sessions (each bound to
// an agent, initiator and tenant). With a broker running it goes through
// the admin socket; otherwise it opens the store directly.
func sessionsCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, sessionsUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("sessions "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./mcpbroker-data", "data directory")
	asJSON := fs.Bool("json", false, "print JSON")
	var pos []string
	for len(args) > 0 { // flags may follow the ID
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if args = fs.Args(); len(args) > 0 {
			pos, args = append(pos, args[0]), args[1:]
		}
	}
	c := taskClient{dir: *data}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "mcpbroker sessions %s: %v\n", sub, err)
		return 1
	}
	switch sub {
	case "list":
		var recs []agents.SessionRecord
		var err error
		if hc, ok := c.remote(); ok {
			err = c.do(hc, http.MethodGet, broker.SessionsPath, nil, &recs)
		} else {
			err = c.local(func(st *store.Store, _ *agents.Tasks) error {
				recs, err = st.ListSessions()
				return err
			})
		}
		if err != nil {
			return fail(err)
		}
		if *asJSON {
			return printJSON(stdout, recs)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tAGENT\tINITIATOR\tTENANT\tOPENED")
		for _, r := range recs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.State(), dash(r.Agent), dash(r.Initiator), dash(r.Tenant),
				r.Opened.UTC().Format(time.RFC3339))
		}
		return exit(tw.Flush())
	case "show", "revoke":
		if len(pos) != 1 {
			fmt.Fprint(stderr, sessionsUsage)
			return 2
		}
		id := pos[0]
		var rec agents.SessionRecord
		var err error
		if hc, ok := c.remote(); ok {
			if sub == "show" {
				err = c.do(hc, http.MethodGet, broker.SessionsPath+"/"+id, nil, &rec)
			} else {
				err = c.do(hc, http.MethodPost, broker.SessionsPath+"/"+id+"/revoke", nil, &rec)
			}
		} else {
			err = c.local(func(st *store.Store, _ *agents.Tasks) error {
				recs, err := st.ListSessions()
				if err != nil {
					return err
				}
				for _, r := range recs {
					if r.ID == id {
						rec = r
						if sub == "revoke" && r.RevokedAt.IsZero() {
							rec.RevokedAt = time.Now().UTC()
							if rec.Ended.IsZero() {
								rec.Ended = rec.RevokedAt
							}
							return st.PutSession(rec)
						}
						return nil
					}
				}
				return agents.ErrUnknownSession
			})
		}
		if err != nil {
			return fail(err)
		}
		if sub == "revoke" && !*asJSON {
			fmt.Fprintf(stdout, "session %s revoked; its next request is refused\n", rec.ID)
			return 0
		}
		return printJSON(stdout, rec)
	}
	fmt.Fprint(stderr, sessionsUsage)
	return 2
}

func printJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return exit(enc.Encode(v))
}
