package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Agents of the generated configurations.
const (
	defaultAgent = "spiffe://e2e.test/agent/default"
	agentA       = "spiffe://e2e.test/agent/a"
	agentB       = "spiffe://e2e.test/agent/b"
)

// permitAll lets every user and agent do everything; tests add forbids.
const permitAll = `@id("e2e-users")
permit (principal is Broker::User, action in Broker::Action::"mcp", resource);

@id("e2e-agents")
permit (principal is Broker::Agent, action in Broker::Action::"mcp", resource);
`

// downstream is one entry of servers: in the broker config.
type downstream struct {
	Name      string
	Transport string // stdio | streamable-http | sse
	URL       string
	Command   string
	Args      []string
	Env       map[string]string
	// Protocol pins the era the broker speaks to it (protocol_version).
	Protocol string
}

// stdioTestserver is the testserver run by the broker over stdio, logging
// to events.
func stdioTestserver(t testing.TB, name, events string) downstream {
	return downstream{Name: name, Transport: "stdio", Command: testserverBin(t),
		Args: []string{"-stdio", "-name", name}, Env: map[string]string{"TESTSERVER_EVENTS": events}}
}

type brokerConfig struct {
	servers  []downstream
	policies string // contents of the one policy file; permitAll if empty
	extra    string // more top-level YAML (max_body_bytes: ...)
	tokens   map[string]string
	// tokens maps an agent SPIFFE ID to its bearer token (passed to the
	// broker in an environment variable). With tokens, requests without a
	// token still act as defaultAgent.
}

// brokerProc is a running `mcpbroker serve --config`.
type brokerProc struct {
	t    testing.TB
	proc *process
	url  string // http://127.0.0.1:PORT/mcp
	data string
	// stdioEvents are the TESTSERVER_EVENTS files of the stdio servers the
	// broker starts; cleanup checks their processes are gone.
	stdioEvents []string
	stopped     bool
}

// servingURL finds the MCP URL in the broker's log line, JSON (the default)
// or text (--log-format text).
var servingURL = regexp.MustCompile(`serving MCP over streamable HTTP.*?"?url"?[=:]"?(https?://[^"\s]+)`)

// startBroker writes a config and starts the broker on 127.0.0.1:0. Cleanup
// stops it with SIGTERM and checks that the stdio children it started are
// gone (case 10).
func startBroker(t testing.TB, bc brokerConfig) *brokerProc {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	pol := filepath.Join(dir, "policies")
	if err := os.MkdirAll(pol, 0o755); err != nil {
		t.Fatal(err)
	}
	if bc.policies == "" {
		bc.policies = permitAll
	}
	if err := os.WriteFile(filepath.Join(pol, "e2e.cedar"), []byte(bc.policies), 0o644); err != nil {
		t.Fatal(err)
	}

	var y strings.Builder
	fmt.Fprintf(&y, "listen: \"127.0.0.1:0\"\ndata_dir: %s\npolicies: %s\n", jsonString(data), jsonString(pol))
	y.WriteString(bc.extra)
	fmt.Fprintf(&y, "\nidentity:\n  mode: dev\n  default_agent: %s\n  default_initiator: alice\n", jsonString(defaultAgent))
	env := os.Environ()
	if len(bc.tokens) > 0 {
		y.WriteString("  tokens:\n")
		i := 0
		for agent, tok := range bc.tokens {
			name := fmt.Sprintf("E2E_TOKEN_%d", i)
			i++
			env = append(env, name+"="+tok)
			fmt.Fprintf(&y, "    - token_env: %s\n      agent: %s\n      initiator: %s\n", name, jsonString(agent), jsonString("init-"+filepath.Base(agent)))
		}
	}
	b := &brokerProc{t: t, data: data}
	y.WriteString("servers:\n")
	if len(bc.servers) == 0 {
		y.WriteString("  []\n")
	}
	for _, s := range bc.servers {
		fmt.Fprintf(&y, "  - name: %s\n    transport: %s\n    trusted: true\n", jsonString(s.Name), jsonString(s.Transport))
		if s.URL != "" {
			fmt.Fprintf(&y, "    url: %s\n", jsonString(s.URL))
		}
		if s.Protocol != "" {
			fmt.Fprintf(&y, "    protocol_version: %s\n", jsonString(s.Protocol))
		}
		if s.Command != "" {
			fmt.Fprintf(&y, "    command: %s\n", jsonString(s.Command))
			args, _ := json.Marshal(s.Args)
			fmt.Fprintf(&y, "    args: %s\n", args)
		}
		if len(s.Env) > 0 {
			e, _ := json.Marshal(s.Env)
			fmt.Fprintf(&y, "    env: %s\n", e)
			if ev := s.Env["TESTSERVER_EVENTS"]; ev != "" && s.Transport == "stdio" {
				b.stdioEvents = append(b.stdioEvents, ev)
			}
		}
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(y.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	urls := make(chan string, 1)
	cmd := exec.Command(brokerBin(t), "serve", "--config", cfg)
	cmd.Env = env
	// Registered before startProcess's cleanup, so it runs after it: the
	// process-group kill there is only a safety net.
	t.Cleanup(b.checkChildrenGone)
	b.proc = startProcess(t, "mcpbroker", cmd, func(stream, line string) {
		if m := servingURL.FindStringSubmatch(line); m != nil {
			select {
			case urls <- m[1]:
			default:
			}
		}
	})
	t.Cleanup(func() { b.stop() })
	select {
	case b.url = <-urls:
	case <-b.proc.done:
		t.Fatalf("broker exited before serving: %v\nconfig:\n%s", b.proc.err, y.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("broker did not announce its URL\nconfig:\n%s", y.String())
	}
	return b
}

// stop sends SIGTERM to the broker alone (not its group: the broker must
// stop its own children) and requires a clean exit within 10 s.
func (b *brokerProc) stop() {
	if b.stopped {
		return
	}
	b.stopped = true
	_ = b.proc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.proc.done:
		if b.proc.err != nil {
			b.t.Errorf("broker exited with %v after SIGTERM", b.proc.err)
		}
	case <-time.After(10 * time.Second):
		b.t.Errorf("broker did not exit within 10s of SIGTERM")
	}
}

// checkChildrenGone fails the test if a stdio testserver the broker started
// outlives it, then kills any such leftover.
func (b *brokerProc) checkChildrenGone() {
	b.stop()
	exe := testserverBin(b.t)
	var pids []int
	for _, ev := range b.stdioEvents {
		pids = append(pids, startedPIDs(b.t, ev)...)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid, exe) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(pid, exe) {
			b.t.Errorf("stdio testserver pid %d outlived the broker", pid)
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
	}
}

// Audit

type auditEvent struct {
	Type       string   `json:"type"`
	CallID     string   `json:"call_id"`
	Session    string   `json:"session"`
	Agent      string   `json:"agent"`
	Initiator  string   `json:"initiator"`
	Method     string   `json:"method"`
	Server     string   `json:"server"`
	Target     string   `json:"target"`
	Decision   string   `json:"decision"`
	Reason     string   `json:"reason"`
	PolicyIDs  []string `json:"policy_ids"`
	Status     string   `json:"status"`
	ErrorClass string   `json:"error_class"`
	Detail     string   `json:"detail"`
}

type auditEntry struct {
	Seq   uint64     `json:"seq"`
	Prev  string     `json:"prev"`
	Hash  string     `json:"hash"`
	Event auditEvent `json:"event"`
}

// auditList runs `mcpbroker audit list --data DIR --json`.
func auditList(t testing.TB, data string) []auditEntry {
	t.Helper()
	cmd := exec.Command(brokerBin(t), "audit", "list", "--data", data, "--json")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("audit list: %v\n%s", err, stderr.String())
	}
	var entries []auditEntry
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		var e auditEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		entries = append(entries, e)
	}
	for i, e := range entries {
		if i > 0 && (e.Seq != entries[i-1].Seq+1 || e.Prev != entries[i-1].Hash) {
			t.Errorf("audit chain broken at seq %d", e.Seq)
		}
	}
	return entries
}

func (b *brokerProc) audit() []auditEntry { return auditList(b.t, b.data) }

// waitAudit polls the audit log until match holds for an event.
func (b *brokerProc) waitAudit(what string, match func(auditEvent) bool) auditEvent {
	b.t.Helper()
	var found *auditEvent
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries := b.audit()
		for i := range entries {
			if match(entries[i].Event) {
				found = &entries[i].Event
			}
		}
		if found != nil {
			return *found
		}
		if time.Now().After(deadline) {
			var types []string
			for _, e := range entries {
				j, _ := json.Marshal(e.Event)
				types = append(types, string(j))
			}
			b.t.Fatalf("no audit record for %s; have:\n%s", what, strings.Join(types, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// callEvents returns the events of one call ID.
func (b *brokerProc) callEvents(callID string) []auditEvent {
	var out []auditEvent
	for _, e := range b.audit() {
		if e.Event.CallID == callID {
			out = append(out, e.Event)
		}
	}
	return out
}

// Clients

// bearer adds an Authorization header to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// connect opens a go-sdk client session to url pinned to era and checks the
// negotiated version. token, if set, is sent as a bearer token.
func connect(t testing.TB, url, era string, opts *mcp.ClientOptions, token string) *mcp.ClientSession {
	t.Helper()
	tr := &mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1}
	if token != "" {
		tr.HTTPClient = &http.Client{Transport: bearer{token: token, next: http.DefaultTransport}}
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "mcpbroker-e2e", Version: "1"}, opts)
	cs, err := c.Connect(ctxFor(t, 20*time.Second), tr, &mcp.ClientSessionOptions{ProtocolVersion: era})
	if err != nil {
		t.Fatalf("connect %s (%s): %v", url, era, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	if got := cs.InitializeResult().ProtocolVersion; got != era {
		t.Fatalf("connect %s: negotiated %s, want %s", url, got, era)
	}
	return cs
}

// listTools returns every tool, following pagination.
func listTools(t testing.TB, cs *mcp.ClientSession) []*mcp.Tool {
	t.Helper()
	var out []*mcp.Tool
	for tool, err := range cs.Tools(ctxFor(t, 20*time.Second), nil) {
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		out = append(out, tool)
	}
	return out
}

func toolNames(ts []*mcp.Tool) []string {
	var names []string
	for _, t := range ts {
		names = append(names, t.Name)
	}
	slices.Sort(names)
	return names
}

// waitTools polls tools/list through cs until every name is listed: the
// broker connects to its downstreams in the background.
func waitTools(t testing.TB, cs *mcp.ClientSession, names ...string) []*mcp.Tool {
	t.Helper()
	var ts []*mcp.Tool
	poll(t, 30*time.Second, fmt.Sprintf("tools %v through the broker", names), func() bool {
		ts = listTools(t, cs)
		have := toolNames(ts)
		for _, n := range names {
			if !slices.Contains(have, n) {
				return false
			}
		}
		return true
	})
	return ts
}

// callTool calls a tool with a 30 s bound.
func callTool(t testing.TB, cs *mcp.ClientSession, name string, args any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(ctxFor(t, 30*time.Second), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	return res
}

// resultText joins the text content of a result.
func resultText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// brokerMeta returns the broker's reason and call ID from a result's _meta.
func brokerMeta(res *mcp.CallToolResult) (reason, callID string) {
	m := res.GetMeta()
	reason, _ = m["io.mcpbroker/reason"].(string)
	callID, _ = m["io.mcpbroker/call_id"].(string)
	return reason, callID
}

// expectRefusal checks a broker refusal: isError, the reason code in the
// text and in _meta, and a call ID. It returns the call ID.
func expectRefusal(t testing.TB, res *mcp.CallToolResult, reasons ...string) string {
	t.Helper()
	if !res.IsError {
		t.Fatalf("want an isError result with reason %v, got %s", reasons, mustJSON(res))
	}
	reason, callID := brokerMeta(res)
	if !slices.Contains(reasons, reason) {
		t.Errorf("_meta reason = %q, want one of %v (result %s)", reason, reasons, mustJSON(res))
	}
	if !strings.Contains(resultText(res), reason) || reason == "" {
		t.Errorf("result text %q does not carry the reason code %q", resultText(res), reason)
	}
	if callID == "" {
		t.Errorf("no io.mcpbroker/call_id in _meta: %s", mustJSON(res))
	}
	return callID
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}
