package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/user"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcpbroker/mcpbroker/broker"
	"github.com/mcpbroker/mcpbroker/broker/approval"
	"github.com/mcpbroker/mcpbroker/broker/store"
)

const approvalsUsage = `usage:
  mcpbroker approvals list [--data DIR] [--json]            pending approvals
  mcpbroker approvals show ID [--data DIR] [--json]         one approval, with what was shown and its history
  mcpbroker approvals approve ID [--comment TEXT] [--as NAME] [--data DIR]
  mcpbroker approvals deny ID [--comment TEXT] [--as NAME] [--data DIR]
  mcpbroker approvals history [--data DIR] [--json]         every approval and its state

With a broker running, commands go through its admin socket (owner-only);
otherwise they open the store. --as names the approver (default: your
login name); the initiator of a call and the agents on its chain may not
approve it.
`

// approvalsCmd lists, shows and decides approvals.
func approvalsCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, approvalsUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("approvals "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./mcpbroker-data", "data directory")
	asJSON := fs.Bool("json", false, "print JSON")
	comment := fs.String("comment", "", "comment recorded with the decision")
	as := fs.String("as", "", "approver name (default: your login name)")
	pos, err := parseArgs(fs, args) // flags may follow a positional argument
	if err != nil {
		return 2
	}
	ac := approvalsClient{taskClient{dir: *data}}
	switch sub {
	case "list", "history":
		rs, err := ac.list(sub == "history")
		if err != nil {
			fmt.Fprintf(stderr, "mcpbroker approvals %s: %v\n", sub, err)
			return 1
		}
		if *asJSON {
			return printApprovalsJSON(stdout, rs)
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		if sub == "list" {
			fmt.Fprintln(tw, "ID\tTOOL\tAGENT\tINITIATOR\tGROUP\tASKED\tDEADLINE")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Tool, r.Agent, r.Initiator, dash(r.Group), r.Asked, r.ExpiresAt.UTC().Format(time.RFC3339))
			}
		} else {
			fmt.Fprintln(tw, "ID\tREQUESTED\tTOOL\tINITIATOR\tSTATE\tAPPROVER\tCHANNEL\tUSED BY")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.RequestedAt.UTC().Format(time.RFC3339), r.Tool, r.Initiator,
					r.State, dash(r.Approver), dash(string(r.Channel)), dash(strings.Join(r.UsedBy, ",")))
			}
		}
		return exit(tw.Flush())
	case "show", "approve", "deny":
		if len(pos) != 1 {
			fmt.Fprint(stderr, approvalsUsage)
			return 2
		}
		var (
			r   *approval.Record
			err error
		)
		if sub == "show" {
			r, err = ac.show(pos[0])
		} else {
			name := *as
			if name == "" {
				if u, uerr := user.Current(); uerr == nil {
					name = u.Username
				}
			}
			r, err = ac.decide(pos[0], sub, broker.ApprovalDecision{Approver: name, Comment: *comment})
		}
		if err != nil {
			fmt.Fprintf(stderr, "mcpbroker approvals %s: %v\n", sub, err)
			return 1
		}
		if *asJSON {
			return printApprovalsJSON(stdout, r)
		}
		if sub != "show" {
			fmt.Fprintf(stdout, "approval %s: %s by %s\n", r.ID, r.State, r.Approver)
			return 0
		}
		printApproval(stdout, r)
		return 0
	}
	fmt.Fprint(stderr, approvalsUsage)
	return 2
}

func printApprovalsJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return exit(enc.Encode(v))
}

func printApproval(w io.Writer, r *approval.Record) {
	fmt.Fprintf(w, "approval %s  state %s  scope %s  asked %s (mode %s%s)\n", r.ID, r.State, r.Scope, r.Asked, r.Mode, map[bool]string{true: ", group " + r.Group}[r.Group != ""])
	fmt.Fprintf(w, "call %s  session %s  task %s  tenant %s\n", r.CallID, dash(r.Session), dash(r.Task), dash(r.Tenant))
	fmt.Fprintf(w, "policies %s  args %s\n", strings.Join(r.PolicyIDs, ","), r.ArgsDigest)
	fmt.Fprintf(w, "requested %s  deadline %s\n", r.RequestedAt.UTC().Format(time.RFC3339), r.ExpiresAt.UTC().Format(time.RFC3339))
	if r.DecidedAt != nil {
		fmt.Fprintf(w, "decided %s by %s via %s  %q\n", r.DecidedAt.UTC().Format(time.RFC3339), dash(r.Approver), r.Channel, r.Comment)
	}
	fmt.Fprintf(w, "\nshown:\n%s\n\nhistory:\n", r.Prompt)
	for _, t := range r.Transitions {
		fmt.Fprintf(w, "  %d  %s  %s → %s  by %s via %s  %s%s\n", t.Seq, t.At.UTC().Format(time.RFC3339), dash(string(t.From)), t.To, dash(t.By), t.Channel, t.Comment, t.Note)
	}
}

// approvalsClient talks to a running broker's admin socket, or to the store.
type approvalsClient struct{ taskClient }

func (c approvalsClient) offline(fn func(svc *approval.Service) error) error {
	path := filepath.Join(c.dir, broker.DBFile)
	st, err := store.Open(path, store.Options{LockTimeout: time.Second})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("%s is held by a running broker whose admin socket did not answer: %w", path, err)
		}
		return err
	}
	defer st.Close()
	return fn(broker.OfflineApprovals(st, nil))
}

func (c approvalsClient) list(all bool) ([]*approval.Record, error) {
	var out []*approval.Record
	if hc, ok := c.remote(); ok {
		q := ""
		if all {
			q = "?all=1"
		}
		return out, c.do(hc, "GET", broker.ApprovalsPath+q, nil, &out)
	}
	err := c.offline(func(svc *approval.Service) error {
		var err error
		out, err = svc.List(all)
		return err
	})
	return out, err
}

func (c approvalsClient) show(id string) (*approval.Record, error) {
	var out *approval.Record
	if hc, ok := c.remote(); ok {
		return out, c.do(hc, "GET", broker.ApprovalsPath+"/"+id, nil, &out)
	}
	err := c.offline(func(svc *approval.Service) error {
		var err error
		out, err = svc.Get(id)
		return err
	})
	return out, err
}

func (c approvalsClient) decide(id, action string, d broker.ApprovalDecision) (*approval.Record, error) {
	var out *approval.Record
	if hc, ok := c.remote(); ok {
		return out, c.do(hc, "POST", broker.ApprovalsPath+"/"+id+"/"+action, d, &out)
	}
	err := c.offline(func(svc *approval.Service) error {
		var err error
		out, err = broker.DecideApproval(svc, id, action, d)
		return err
	})
	return out, err
}
