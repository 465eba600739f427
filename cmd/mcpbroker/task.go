package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker"
	"github.com/mcpbroker/mcpbroker/broker/store"
)

const taskUsage = `usage:
  mcpbroker task grant --agent SPIFFE_ID --initiator ID --tools PATTERN[,PATTERN] --ttl 1h [--max-calls N] [--purpose TEXT] [--tenant T] [--data DIR] [--json]
  mcpbroker task list [--data DIR] [--json]
  mcpbroker task show ID [--data DIR] [--json]
  mcpbroker task revoke ID [--data DIR]
`

// taskCmd manages task grants. With a broker running it goes through the
// broker's admin socket; otherwise it opens the store directly.
func taskCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, taskUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("task "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./mcpbroker-data", "data directory")
	asJSON := fs.Bool("json", false, "print JSON")
	var g broker.TaskGrant
	var tools string
	if sub == "grant" {
		fs.StringVar(&g.Agent, "agent", "", "agent SPIFFE ID (or a pattern ending in *)")
		fs.StringVar(&g.Initiator, "initiator", "", "initiator the agent acts for")
		fs.StringVar(&g.InitiatorKind, "initiator-kind", "user", "user or workload")
		fs.StringVar(&g.Tenant, "tenant", "", "tenant")
		fs.Func("groups", "comma-separated groups of the initiator (Cedar Team parents)", func(v string) error {
			for _, x := range strings.Split(v, ",") {
				if x = strings.TrimSpace(x); x != "" {
					g.Groups = append(g.Groups, x)
				}
			}
			return nil
		})
		fs.StringVar(&tools, "tools", "", "comma-separated tool name patterns, e.g. notes__read_*,payments__balance")
		fs.StringVar(&g.TTL, "ttl", "1h", "lifetime")
		fs.Int64Var(&g.MaxCalls, "max-calls", 0, "call budget (0: unbounded)")
		fs.IntVar(&g.MaxDepth, "max-depth", 0, "deepest delegation chain")
		fs.StringVar(&g.Purpose, "purpose", "", "what the task is for")
	}
	pos, perr := parseArgs(fs, args) // flags may follow a positional ID
	if perr != nil {
		return 2
	}
	t := taskClient{dir: *data}
	var (
		out any
		err error
	)
	switch sub {
	case "grant":
		for _, p := range strings.Split(tools, ",") {
			if p = strings.TrimSpace(p); p != "" {
				g.Tools = append(g.Tools, p)
			}
		}
		if g.Agent == "" || g.Initiator == "" || len(g.Tools) == 0 {
			fmt.Fprint(stderr, "mcpbroker task grant: --agent, --initiator and --tools are required\n")
			return 2
		}
		var res grantResult
		res, err = t.grant(g)
		if err == nil && !*asJSON {
			fmt.Fprintf(stdout, "task %s granted to %s for %s until %s\n", res.Task.ID, res.Task.Agent, res.Task.Initiator, res.Task.ExpiresAt.Format(time.RFC3339))
			fmt.Fprintf(stdout, "handle (shown once; the agent presents it as the Mcp-Broker-Task header): %s\n", res.Handle)
			return 0
		}
		out = res
	case "list":
		var vs []broker.TaskView
		vs, err = t.list()
		if err == nil && !*asJSON {
			tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tAGENT\tINITIATOR\tTOOLS\tCALLS\tEXPIRES\tSTATE\tPARENT")
			for _, v := range vs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Agent, v.Initiator, strings.Join(v.Tools, ","),
					budget(v), v.ExpiresAt.UTC().Format(time.RFC3339), state(v.Task), dash(v.Parent))
			}
			return exit(tw.Flush())
		}
		out = vs
	case "show", "revoke":
		if len(pos) != 1 {
			fmt.Fprint(stderr, taskUsage)
			return 2
		}
		var v broker.TaskView
		if sub == "show" {
			v, err = t.show(pos[0])
		} else {
			v, err = t.revoke(pos[0])
		}
		out = v
		if err == nil && !*asJSON {
			b, _ := json.MarshalIndent(v, "", "  ")
			fmt.Fprintln(stdout, string(b))
			return 0
		}
	default:
		fmt.Fprint(stderr, taskUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "mcpbroker task %s: %v\n", sub, err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return exit(enc.Encode(out))
}

func exit(err error) int {
	if err != nil {
		return 1
	}
	return 0
}

func budget(v broker.TaskView) string {
	if v.MaxCalls <= 0 {
		return fmt.Sprintf("%d/-", v.Calls)
	}
	return fmt.Sprintf("%d/%d", v.Calls, v.MaxCalls)
}

func state(t *agents.Task) string {
	if err := t.Live(time.Now()); err != nil {
		if t.RevokedAt != nil {
			return "revoked"
		}
		return "expired"
	}
	return "live"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type grantResult struct {
	Handle string          `json:"handle"`
	Task   broker.TaskView `json:"task"`
}

// taskClient talks to a running broker's admin socket, or to the store.
type taskClient struct{ dir string }

func (c taskClient) remote() (*http.Client, bool) {
	sock := filepath.Join(c.dir, broker.AdminSocket)
	if _, err := os.Stat(sock); err != nil {
		return nil, false
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	// A stale socket from a crashed broker: fall back to the store.
	conn, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return nil, false
	}
	_ = conn.Close()
	return hc, true
}

func (c taskClient) do(hc *http.Client, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://mcpbroker"+path, r)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s (%s)", e.Error, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c taskClient) local(fn func(st *store.Store, ts *agents.Tasks) error) error {
	path := filepath.Join(c.dir, broker.DBFile)
	st, err := store.Open(path, store.Options{LockTimeout: time.Second})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return fmt.Errorf("%s is held by a running broker whose admin socket did not answer: %w", path, err)
		}
		return err
	}
	defer st.Close()
	return fn(st, agents.NewTasks(st, nil))
}

func (c taskClient) grant(g broker.TaskGrant) (grantResult, error) {
	var res grantResult
	if hc, ok := c.remote(); ok {
		return res, c.do(hc, "POST", broker.TasksPath, g, &res)
	}
	err := c.local(func(st *store.Store, ts *agents.Tasks) error {
		h, t, err := broker.GrantTask(ts, g, time.Now())
		if err != nil {
			return err
		}
		res = grantResult{Handle: h, Task: broker.ViewTask(ts, t, 0)}
		return nil
	})
	return res, err
}

func (c taskClient) list() ([]broker.TaskView, error) {
	var out []broker.TaskView
	if hc, ok := c.remote(); ok {
		return out, c.do(hc, "GET", broker.TasksPath, nil, &out)
	}
	err := c.local(func(st *store.Store, ts *agents.Tasks) error {
		all, err := ts.List()
		for _, t := range all {
			n, _ := st.CallCount(t.ID)
			out = append(out, broker.ViewTask(ts, t, n))
		}
		return err
	})
	return out, err
}

func (c taskClient) show(id string) (broker.TaskView, error) {
	var v broker.TaskView
	if hc, ok := c.remote(); ok {
		return v, c.do(hc, "GET", broker.TasksPath+"/"+id, nil, &v)
	}
	err := c.local(func(st *store.Store, ts *agents.Tasks) error {
		t, err := ts.Get(id)
		if err != nil {
			return err
		}
		n, _ := st.CallCount(id)
		v = broker.ViewTask(ts, t, n)
		return nil
	})
	return v, err
}

func (c taskClient) revoke(id string) (broker.TaskView, error) {
	var v broker.TaskView
	if hc, ok := c.remote(); ok {
		return v, c.do(hc, "POST", broker.TasksPath+"/"+id+"/revoke", nil, &v)
	}
	err := c.local(func(st *store.Store, ts *agents.Tasks) error {
		t, err := ts.Revoke(id)
		if err != nil {
			return err
		}
		n, _ := st.CallCount(id)
		v = broker.ViewTask(ts, t, n)
		return nil
	})
	return v, err
}
