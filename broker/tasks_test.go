package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker/audit"
)

const (
	planner    = "spiffe://t.local/agent/planner"
	researcher = "spiffe://t.local/agent/researcher"
	coder      = "spiffe://t.local/agent/coder"
)

// chainRig is a broker with a "kv" tool server, a "research" server that is
// itself an agent calling back through the broker, and dev tokens for three
// agents.
type chainRig struct {
	b   *Broker
	url string
	dir string
	// researcherCalls is what the researcher saw when it called back.
	mu      sync.Mutex
	results []string
}

func kvServer() *server.MCPServer {
	s := server.NewMCPServer("kv", "1")
	ro := true
	get := mcp.NewTool("get", mcp.WithString("key"))
	get.Annotations.ReadOnlyHint = &ro
	s.AddTool(get, func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("value of " + req.GetString("key", "")), nil
	})
	s.AddTool(mcp.NewTool("put", mcp.WithString("key")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("stored"), nil
	})
	s.AddTool(mcp.NewTool("drop"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("dropped"), nil
	})
	s.AddPrompt(mcp.NewPrompt("hint"), hintPrompt)
	return s
}

func hintPrompt(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	return mcp.NewGetPromptResult("a hint", []mcp.PromptMessage{mcp.NewPromptMessage(mcp.RoleUser, mcp.NewTextContent("look here"))}), nil
}

// researchServer's "ask" tool calls kv__<tool> through the broker as the
// researcher, presenting the chain token it was given.
func (r *chainRig) researchServer(token string) *server.MCPServer {
	s := server.NewMCPServer("research", "1")
	s.AddPrompt(mcp.NewPrompt("hint"), hintPrompt)
	s.AddTool(mcp.NewTool("ask", mcp.WithString("tool"), mcp.WithString("forge"), mcp.WithString("args")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		chain := ""
		if req.Params.Meta != nil {
			chain, _ = req.Params.Meta.AdditionalFields[MetaChain].(string)
		}
		if f := req.GetString("forge", ""); f != "" {
			chain = f
		}
		hdr := map[string]string{"Authorization": "Bearer " + token}
		if chain != "" {
			hdr[HeaderChain] = chain
		}
		tr, _ := transport.NewStreamableHTTP(r.url, transport.WithHTTPHeaders(hdr))
		c := client.NewClient(tr, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
		defer c.Close()
		if err := c.Start(ctx); err != nil {
			return nil, err
		}
		if _, err := c.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
			return nil, err
		}
		creq := mcp.CallToolRequest{}
		creq.Params.Name = req.GetString("tool", "kv__get")
		creq.Params.Arguments = map[string]any{"key": "k"}
		if a := req.GetString("args", ""); a != "" {
			var args map[string]any
			if err := json.Unmarshal([]byte(a), &args); err != nil {
				return nil, err
			}
			creq.Params.Arguments = args
		}
		res, err := c.CallTool(ctx, creq)
		if err != nil {
			return nil, err
		}
		out := text(res)
		if res.IsError {
			out = "ERROR " + out
		}
		r.mu.Lock()
		r.results = append(r.results, out)
		r.mu.Unlock()
		return mcp.NewToolResultText(out), nil
	})
	return s
}

func newChainRig(t *testing.T, policy string) *chainRig {
	t.Helper()
	return newChainRigWith(t, policy, nil)
}

// newChainRigWith is newChainRig with edit applied to the config.
func newChainRigWith(t *testing.T, policy string, edit func(*Config)) *chainRig {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.cedar"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"PLANNER_TOK": "planner-token-1", "RESEARCHER_TOK": "researcher-token-1", "CODER_TOK": "coder-token-1", "STRANGER_TOK": "stranger-token-1"} {
		t.Setenv(name, tok)
	}
	r := &chainRig{}
	cfg := Defaults()
	cfg.Policies = dir
	cfg.Identity = IdentityConfig{Mode: "dev", Tokens: []DevToken{
		{TokenEnv: "PLANNER_TOK", Agent: planner, Initiator: "alice"},
		{TokenEnv: "RESEARCHER_TOK", Agent: researcher, Initiator: "mallory"},
		{TokenEnv: "CODER_TOK", Agent: coder, Initiator: "alice"},
		{TokenEnv: "STRANGER_TOK", Agent: "spiffe://t.local/agent/stranger", Initiator: "alice"},
	}}
	cfg.Agents = []AgentConfig{
		{ID: planner, Classes: []string{"planner"}, MaxDepth: 3},
		{ID: researcher, Classes: []string{"research"}, DefaultTask: &DefaultTaskConfig{Tools: []string{"kv__get", "kv__put"}, TTL: Duration(time.Hour)}},
		{ID: coder, Classes: []string{"coding"}, MaxDepth: 2},
	}
	cfg.Servers = []ServerConfig{
		{Name: "kv", Transport: "in-process", inProcess: "kv", Trusted: true},
		{Name: "research", Transport: "in-process", inProcess: "research", Agent: researcher},
	}
	cfg.inProcess = map[string]*server.MCPServer{"kv": kvServer(), "research": r.researchServer("researcher-token-1")}
	if edit != nil {
		edit(&cfg)
	}
	r.b, r.url = runBroker(t, cfg)
	r.dir = r.b.cfg.DataDir
	return r
}

// agent connects as token, presenting handle (if any) as a header.
func (r *chainRig) agent(t *testing.T, token, handle string) *client.Client {
	t.Helper()
	hdr := map[string]string{"Authorization": "Bearer " + token}
	if handle != "" {
		hdr[HeaderTask] = handle
	}
	tr, _ := transport.NewStreamableHTTP(r.url, transport.WithHTTPHeaders(hdr))
	c := client.NewClient(tr, client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func reasonOf(res *mcp.CallToolResult) string {
	if res.Meta == nil {
		return ""
	}
	s, _ := res.Meta.AdditionalFields["io.mcpbroker/reason"].(string)
	return s
}

const permitAll = `
@id("users") permit (principal is Broker::User, action, resource);
@id("agents") permit (principal is Broker::Agent, action, resource);
`

func grant(t *testing.T, r *chainRig, tk agents.Task) string {
	t.Helper()
	if tk.ExpiresAt.IsZero() {
		tk.ExpiresAt = time.Now().Add(time.Hour)
	}
	if tk.Initiator == "" {
		tk.Initiator = "alice"
	}
	h, _, err := r.b.tasks.Grant(tk)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestTaskBoundary(t *testing.T) {
	r := newChainRig(t, permitAll)
	h := grant(t, r, agents.Task{Agent: planner, Tools: []string{"kv__get"}, MaxCalls: 2, Purpose: "read"})
	c := r.agent(t, "planner-token-1", h)

	lt, err := c.ListTools(context.Background(), mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range lt.Tools {
		names = append(names, tl.Name)
	}
	if got := strings.Join(names, ","); strings.Contains(got, "kv__put") || !strings.Contains(got, "kv__get") {
		t.Errorf("tools/list in task = %s", got)
	}
	if res := callTool(t, c, "kv__put", map[string]any{"key": "k"}); reasonOf(res) != string(ReasonOutsideTask) {
		t.Errorf("put outside the task: %q", text(res))
	}
	for i := range 2 {
		if res := callTool(t, c, "kv__get", map[string]any{"key": "k"}); res.IsError {
			t.Fatalf("get %d: %q", i, text(res))
		}
	}
	if res := callTool(t, c, "kv__get", map[string]any{"key": "k"}); reasonOf(res) != string(ReasonOutsideTask) {
		t.Errorf("third call over a budget of 2: %q", text(res))
	}

	// Another agent presenting the planner's handle is refused.
	other := r.agent(t, "coder-token-1", h)
	if res := callTool(t, other, "kv__get", map[string]any{"key": "k"}); reasonOf(res) != string(ReasonOutsideTask) {
		t.Errorf("stolen handle: %q", text(res))
	}
	// A revoked task ends at the next call.
	h2 := grant(t, r, agents.Task{Agent: planner, Tools: []string{"kv__*"}})
	c2 := r.agent(t, "planner-token-1", h2)
	if res := callTool(t, c2, "kv__get", map[string]any{"key": "k"}); res.IsError {
		t.Fatal(text(res))
	}
	tk, _ := r.b.tasks.Resolve(h2, planner)
	if _, err := r.b.tasks.Revoke(tk.ID); err != nil {
		t.Fatal(err)
	}
	if res := callTool(t, c2, "kv__get", map[string]any{"key": "k"}); reasonOf(res) != string(ReasonOutsideTask) {
		t.Errorf("revoked task: %q", text(res))
	}
}

func delegate(t *testing.T, c *client.Client, args map[string]any) (*mcp.CallToolResult, map[string]any) {
	t.Helper()
	res := callTool(t, c, toolDelegate, args)
	var out map[string]any
	if !res.IsError {
		if err := json.Unmarshal([]byte(text(res)), &out); err != nil {
			t.Fatal(err)
		}
	}
	return res, out
}

func TestDelegationNarrowsMonotonically(t *testing.T) {
	r := newChainRig(t, permitAll)
	h := grant(t, r, agents.Task{Agent: planner, Tools: []string{"kv__get", "research__*"}, MaxCalls: 10, ExpiresAt: time.Now().Add(30 * time.Minute)})
	c := r.agent(t, "planner-token-1", h)

	for name, args := range map[string]map[string]any{
		"tool outside the parent":  {"agent": coder, "tools": []any{"kv__put"}},
		"wider pattern":            {"agent": coder, "tools": []any{"kv__*"}},
		"longer expiry":            {"agent": coder, "tools": []any{"kv__get"}, "ttl": "2h"},
		"bigger budget":            {"agent": coder, "tools": []any{"kv__get"}, "max_calls": 11},
		"cycle back to the parent": {"agent": planner, "tools": []any{"kv__get"}},
	} {
		t.Run(name, func(t *testing.T) {
			res, _ := delegate(t, c, args)
			if reasonOf(res) != string(ReasonOutsideTask) {
				t.Errorf("got %q", text(res))
			}
		})
	}
	res, out := delegate(t, c, map[string]any{"agent": coder, "tools": []any{"kv__get"}, "ttl": "10m", "max_calls": 1})
	if res.IsError {
		t.Fatal(text(res))
	}
	sub := r.agent(t, "coder-token-1", out["handle"].(string))
	if res := callTool(t, sub, "kv__get", map[string]any{"key": "k"}); res.IsError {
		t.Fatalf("delegated get: %q", text(res))
	}
	if res := callTool(t, sub, "kv__get", map[string]any{"key": "k"}); reasonOf(res) != string(ReasonOutsideTask) {
		t.Errorf("delegated budget of 1 not enforced: %q", text(res))
	}
	// The coder (max depth 2) cannot delegate further: its sub-agent would
	// act at depth 3, past the planner's chain limit for the sub-agent? The
	// researcher has the default limit 4, but the chain may not revisit.
	res, _ = delegate(t, sub, map[string]any{"agent": planner, "tools": []any{"kv__get"}})
	if reasonOf(res) != string(ReasonOutsideTask) {
		t.Errorf("delegation back to the planner (cycle): %q", text(res))
	}
}

func TestChainedCallActsForTheInitiator(t *testing.T) {
	// Alice may read but not write; the researcher (whose own token says
	// mallory) may write. Through the planner's chain the researcher acts
	// for alice, and every pass must allow.
	r := newChainRig(t, `
@id("alice-reads") permit (principal is Broker::User, action, resource) when { principal == Broker::User::"alice" && (resource.readOnlyHint || resource in Broker::ToolServer::"research" || resource in Broker::ToolServer::"broker") };
@id("mallory-all") permit (principal is Broker::User, action, resource) when { principal == Broker::User::"mallory" };
@id("agents") permit (principal is Broker::Agent, action, resource);
@id("no-drop-for-research") forbid (principal == Broker::Agent::"`+researcher+`", action, resource == Broker::Tool::"kv/drop");
`)
	h := grant(t, r, agents.Task{Agent: planner, Tools: []string{"kv__*", "research__*"}})
	c := r.agent(t, "planner-token-1", h)

	cases := []struct{ tool, want string }{
		{"kv__get", "value of k"}, // allowed for alice, planner, researcher
		{"kv__put", "ERROR mcpbroker: " + string(ReasonDeniedByPolicy)}, // researcher may, alice may not
		{"kv__drop", "ERROR mcpbroker: " + string(ReasonOutsideTask)},   // outside the researcher's own default task
	}
	for _, tc := range cases {
		t.Run(tc.tool, func(t *testing.T) {
			res := callTool(t, c, "research__ask", map[string]any{"tool": tc.tool})
			if res.IsError || !strings.HasPrefix(text(res), tc.want) {
				t.Errorf("%s via the researcher: %q (isError %v), want prefix %q", tc.tool, text(res), res.IsError, tc.want)
			}
		})
	}
	// Without the chain the researcher acts for mallory (its own token),
	// with its default task: put is allowed.
	direct := r.agent(t, "researcher-token-1", "")
	if res := callTool(t, direct, "kv__put", map[string]any{"key": "k"}); res.IsError {
		t.Errorf("researcher directly: %q", text(res))
	}
	// A forged chain token is refused.
	res := callTool(t, c, "research__ask", map[string]any{"tool": "kv__get", "forge": "mcpbc1.e30.AAAA"})
	if !strings.Contains(text(res), string(ReasonOutsideTask)) {
		t.Errorf("forged chain token: %q", text(res))
	}
	// The records carry the whole chain and the initiator.
	es := listLive(t, r.dir, audit.Filter{Type: audit.CallDecided, Target: "kv__get"})
	found := false
	for _, e := range es {
		if len(e.Event.Chain) == 2 && e.Event.Chain[0] == planner && e.Event.Chain[1] == researcher {
			found = true
			if e.Event.Initiator != "alice" || len(e.Event.Passes) != 3 || e.Event.Task == "" {
				t.Errorf("chained record: %+v", e.Event)
			}
		}
	}
	if !found {
		t.Errorf("no chained kv__get record among %d: %s", len(es), fmt.Sprint(es))
	}
}

func TestUnregisteredAgentRefused(t *testing.T) {
	r := newChainRig(t, permitAll)
	c := r.agent(t, "stranger-token-1", "")
	if res := callTool(t, c, "kv__get", map[string]any{"key": "k"}); reasonOf(res) != string(ReasonDeniedByPolicy) {
		t.Errorf("unregistered agent: %q", text(res))
	}
	lt, err := c.ListTools(context.Background(), mcp.ListToolsRequest{})
	if err != nil || len(lt.Tools) != 0 {
		t.Errorf("unregistered agent sees %d tools (%v)", len(lt.Tools), err)
	}
}

// TestInitiatorMayAgentMayNot: the initiator may use the tool, the acting
// agent may not: the agent's pass denies, and the record names it.
func TestInitiatorMayAgentMayNot(t *testing.T) {
	r := newChainRig(t, `@id("users") permit (principal is Broker::User, action, resource);
@id("planners") permit (principal in Broker::AgentClass::"planner", action, resource);`)
	h := grant(t, r, agents.Task{Agent: coder, Tools: []string{"kv__*"}})
	c := r.agent(t, "coder-token-1", h)
	if res := callTool(t, c, "kv__get", map[string]any{"key": "k"}); reasonOf(res) != string(ReasonDeniedByPolicy) {
		t.Fatalf("coder (not a planner) for alice: %q", text(res))
	}
	es := listLive(t, r.dir, audit.Filter{Type: audit.CallDecided, Target: "kv__get"})
	if len(es) != 1 || !strings.Contains(es[0].Event.Detail, coder) || len(es[0].Event.Passes) != 2 || !es[0].Event.Passes[0].Allowed {
		t.Fatalf("record: %+v", es)
	}
}

// TestChainedCallCannotDelegate: a sub-agent acting on a chain token may
// not mint a task: the task would outlive the call it acts within.
func TestChainedCallCannotDelegate(t *testing.T) {
	r := newChainRig(t, permitAll)
	h := grant(t, r, agents.Task{Agent: planner, Tools: []string{"kv__*", "research__*"}})
	c := r.agent(t, "planner-token-1", h)
	args, _ := json.Marshal(map[string]any{"agent": coder, "tools": []string{"kv__get"}})
	res := callTool(t, c, "research__ask", map[string]any{"tool": toolDelegate, "args": string(args)})
	if !strings.HasPrefix(text(res), "ERROR mcpbroker: "+string(ReasonOutsideTask)) || !strings.Contains(text(res), "chained call cannot delegate") {
		t.Fatalf("delegation from a chained call: %q", text(res))
	}
}

// TestHandleBoundToItsInitiator: a handle acts only for its own
// initiator: an agent authenticated on behalf of someone else may not
// present it.
func TestHandleBoundToItsInitiator(t *testing.T) {
	r := newChainRig(t, permitAll)
	// The researcher's token acts for mallory.
	alices := grant(t, r, agents.Task{Agent: researcher, Initiator: "alice", Tools: []string{"kv__*"}})
	if res := callTool(t, r.agent(t, "researcher-token-1", alices), "kv__put", map[string]any{"key": "k"}); reasonOf(res) != string(ReasonOutsideTask) {
		t.Fatalf("alice's handle presented for mallory: %q", text(res))
	}
	mallorys := grant(t, r, agents.Task{Agent: researcher, Initiator: "mallory", Tools: []string{"kv__*"}})
	if res := callTool(t, r.agent(t, "researcher-token-1", mallorys), "kv__put", map[string]any{"key": "k"}); res.IsError {
		t.Fatalf("mallory's own handle: %q", text(res))
	}
	other := grant(t, r, agents.Task{Agent: researcher, Initiator: "mallory", Tenant: "acme", Tools: []string{"kv__*"}})
	if res := callTool(t, r.agent(t, "researcher-token-1", other), "kv__put", map[string]any{"key": "k"}); reasonOf(res) != string(ReasonOutsideTask) {
		t.Fatalf("a handle of another tenant: %q", text(res))
	}
}

// TestTaskMaxDepth: a task's own max_depth bounds delegation and chains
// made under it, not only the agents' registry limits.
func TestTaskMaxDepth(t *testing.T) {
	r := newChainRig(t, permitAll)
	h := grant(t, r, agents.Task{Agent: planner, Tools: []string{"kv__*", "research__*"}, MaxDepth: 1})
	c := r.agent(t, "planner-token-1", h)
	if res, _ := delegate(t, c, map[string]any{"agent": coder, "tools": []any{"kv__get"}}); reasonOf(res) != string(ReasonOutsideTask) {
		t.Fatalf("delegation past the task's max depth: %q", text(res))
	}
	res := callTool(t, c, "research__ask", map[string]any{"tool": "kv__get"})
	if !strings.HasPrefix(text(res), "ERROR mcpbroker: "+string(ReasonOutsideTask)) {
		t.Fatalf("a chained call past the task's max depth: %q", text(res))
	}
}

// TestRevokedDefaultTaskStaysRevoked: revoking an agent's default task
// stops it; no fresh default replaces it before it would have expired.
func TestRevokedDefaultTaskStaysRevoked(t *testing.T) {
	r := newChainRig(t, permitAll)
	c := r.agent(t, "researcher-token-1", "")
	if res := callTool(t, c, "kv__get", map[string]any{"key": "k"}); res.IsError {
		t.Fatalf("default task: %q", text(res))
	}
	all, err := r.b.tasks.List()
	if err != nil {
		t.Fatal(err)
	}
	revoked := 0
	for _, tk := range all {
		if tk.Source == "default" && tk.Agent == researcher {
			if _, err := r.b.tasks.Revoke(tk.ID); err != nil {
				t.Fatal(err)
			}
			revoked++
		}
	}
	if revoked != 1 {
		t.Fatalf("%d default tasks for the researcher", revoked)
	}
	if res := callTool(t, c, "kv__get", map[string]any{"key": "k"}); !res.IsError {
		t.Fatalf("the revoked default task was replaced: %q", text(res))
	}
}

// TestChainLimitWithoutCallerTask: a sub-agent called by an agent that has
// no task still stays inside its own default task.
func TestChainLimitWithoutCallerTask(t *testing.T) {
	r := newChainRig(t, permitAll)
	c := r.agent(t, "planner-token-1", "") // the planner has no default task
	res := callTool(t, c, "research__ask", map[string]any{"tool": "kv__drop"})
	if !strings.HasPrefix(text(res), "ERROR mcpbroker: "+string(ReasonOutsideTask)) {
		t.Fatalf("kv__drop via the researcher outside its own default task: %q", text(res))
	}
	if res := callTool(t, c, "research__ask", map[string]any{"tool": "kv__get"}); strings.HasPrefix(text(res), "ERROR") {
		t.Fatalf("kv__get via the researcher: %q", text(res))
	}
}

// TestSubAgentCannotApproveInBand: a call that only its initiator may
// approve, in band, is refused when the acting agent is a sub-agent (its
// client would answer its own prompt), even if that client can elicit.
func TestSubAgentCannotApproveInBand(t *testing.T) {
	r := newChainRig(t, permitAll+`
@id("initiator-only") @approval("initiator")
forbid (principal, action == Broker::Action::"call_tool", resource == Broker::Tool::"kv/put")
unless { context has approval && context.approval.granted && context.approval.callId == context.callId };
`)
	h := grant(t, r, agents.Task{Agent: planner, Tools: []string{"kv__*"}})
	c := r.agent(t, "planner-token-1", h)
	_, out := delegate(t, c, map[string]any{"agent": coder, "tools": []any{"kv__put"}})
	// The coder's client declares elicitation and would say yes.
	tr, _ := transport.NewStreamableHTTP(r.url, transport.WithHTTPHeaders(map[string]string{"Authorization": "Bearer coder-token-1", HeaderTask: out["handle"].(string)}))
	yes := &human{action: mcp.ElicitationResponseActionAccept, answer: "approve"}
	sub := client.NewClient(tr, client.WithElicitationHandler(yes), client.WithProtocolVersion(mcp.ProtocolVersion20251125))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := sub.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
		t.Fatal(err)
	}
	res := callTool(t, sub, "kv__put", map[string]any{"key": "k"})
	if reasonOf(res) != string(ReasonApprovalRequired) || yes.asked.Load() != 0 {
		t.Fatalf("a sub-agent's own client approved its call: %q (asked %d)", text(res), yes.asked.Load())
	}
	es := listLive(t, r.dir, audit.Filter{Type: audit.ApprovalDecided, Target: "kv__put"})
	if len(es) != 1 || !strings.Contains(es[0].Event.Detail, "sub-agent") {
		t.Fatalf("refusal record: %+v", es)
	}
}

// TestTaskBoundsResourcesAndPrompts: under a task, an agent reads the
// resources and gets the prompts only of servers some of its tools are on.
func TestTaskBoundsResourcesAndPrompts(t *testing.T) {
	r := newChainRig(t, permitAll)
	h := grant(t, r, agents.Task{Agent: planner, Tools: []string{"research__*"}})
	c := r.agent(t, "planner-token-1", h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.GetPrompt(ctx, mcp.GetPromptRequest{Params: mcp.GetPromptParams{Name: "kv__hint"}})
	if err == nil {
		t.Fatal("a prompt of a server outside the task")
	}
	if _, err := c.GetPrompt(ctx, mcp.GetPromptRequest{Params: mcp.GetPromptParams{Name: "research__hint"}}); err != nil {
		t.Fatalf("a prompt of a server inside the task: %v", err)
	}
	// The listing shows only the prompts it may get.
	lp, err := c.ListPrompts(ctx, mcp.ListPromptsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range lp.Prompts {
		names = append(names, p.Name)
	}
	if len(names) != 1 || names[0] != "research__hint" {
		t.Fatalf("prompts listed: %v", names)
	}
}

// TestChainedCallsSpendTheSubAgentsOwnBudget: a sub-agent acting on a chain
// spends its own default task's budget too, not only its caller's.
func TestChainedCallsSpendTheSubAgentsOwnBudget(t *testing.T) {
	r := newChainRigWith(t, permitAll, func(cfg *Config) {
		for i := range cfg.Agents {
			if cfg.Agents[i].ID == researcher {
				cfg.Agents[i].DefaultTask.MaxCalls = 1
			}
		}
	})
	h := grant(t, r, agents.Task{Agent: planner, Tools: []string{"kv__*", "research__*"}, MaxCalls: 100})
	c := r.agent(t, "planner-token-1", h)
	if res := callTool(t, c, "research__ask", map[string]any{"tool": "kv__get"}); strings.HasPrefix(text(res), "ERROR") {
		t.Fatalf("first chained call: %q", text(res))
	}
	res := callTool(t, c, "research__ask", map[string]any{"tool": "kv__get"})
	if !strings.HasPrefix(text(res), "ERROR mcpbroker: "+string(ReasonOutsideTask)) {
		t.Fatalf("a second chained call past the researcher's own budget of 1: %q", text(res))
	}
}
