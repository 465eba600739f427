package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker"
	"github.com/mcpbroker/mcpbroker/broker/store"
)

const toolsUsage = `usage:
  mcpbroker tools list [--data DIR] [--json]     pinned tool definitions and which changed
  mcpbroker tools diff SERVER/TOOL [--data DIR]  what changed since the definition was pinned
  mcpbroker tools pin SERVER/TOOL [--data DIR]   accept the changed definition (calls resume)
`

func toolsCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, toolsUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("tools "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./mcpbroker-data", "data directory")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args) // flags may follow a positional argument
	if err != nil {
		return 2
	}
	t := taskClient{dir: *data}
	list := func() ([]*store.Pin, error) {
		var ps []*store.Pin
		if hc, ok := t.remote(); ok {
			return ps, t.do(hc, "GET", broker.PinsPath, nil, &ps)
		}
		err := t.local(func(st *store.Store, _ *agents.Tasks) error {
			var err error
			ps, err = st.ListPins()
			return err
		})
		return ps, err
	}
	switch sub {
	case "list":
		ps, err := list()
		if err != nil {
			fmt.Fprintf(stderr, "mcpbroker tools list: %v\n", err)
			return 1
		}
		if *asJSON {
			return exit(json.NewEncoder(stdout).Encode(ps))
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOOL\tSTATE\tPINNED\tBY\tDIGEST")
		for _, p := range ps {
			state := "pinned"
			if p.PendingDigest != "" {
				state = "CHANGED (calls refused)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Key, state, p.PinnedAt.UTC().Format(time.RFC3339), p.PinnedBy, p.Digest[:min(len(p.Digest), 19)])
		}
		return exit(tw.Flush())
	case "diff", "pin":
		if len(pos) != 1 {
			fmt.Fprint(stderr, toolsUsage)
			return 2
		}
		key := pos[0]
		if sub == "pin" {
			var p store.Pin
			var err error
			if hc, ok := t.remote(); ok {
				err = t.do(hc, "POST", broker.PinsPath+"/pin?key="+url.QueryEscape(key), nil, &p)
			} else {
				err = t.local(func(st *store.Store, _ *agents.Tasks) error {
					pp, err := broker.PinTool(st, key, "operator", time.Now())
					if pp != nil {
						p = *pp
					}
					return err
				})
			}
			if err != nil {
				fmt.Fprintf(stderr, "mcpbroker tools pin: %v\n", err)
				return 1
			}
			fmt.Fprintf(stdout, "%s pinned at %s\n", p.Key, p.Digest)
			return 0
		}
		ps, err := list()
		if err != nil {
			fmt.Fprintf(stderr, "mcpbroker tools diff: %v\n", err)
			return 1
		}
		for _, p := range ps {
			if p.Key != key {
				continue
			}
			if p.PendingDigest == "" {
				fmt.Fprintf(stdout, "%s is unchanged since it was pinned (%s)\n", key, p.Digest)
				return 0
			}
			fmt.Fprintf(stdout, "--- pinned %s (%s)\n+++ offered %s\n", p.Digest, p.PinnedAt.UTC().Format(time.RFC3339), p.PendingDigest)
			fmt.Fprint(stdout, broker.DiffDefinitions(p.Definition, p.Pending))
			return 0
		}
		fmt.Fprintf(stderr, "mcpbroker tools diff: no tool %q has been seen\n", key)
		return 1
	}
	fmt.Fprint(stderr, toolsUsage)
	return 2
}
