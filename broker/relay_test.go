package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/agents"
)

type agentsID = agents.Identity

func agentsIdentity(agent, initiator string) agents.Identity {
	return agents.Identity{Agent: agent, Initiator: initiator, InitiatorKind: agents.InitiatorUser}
}

// askServer is a downstream whose tool asks its client a question.
func askServer() *server.MCPServer {
	s := server.NewMCPServer("asker", "1")
	s.AddTool(mcp.NewTool("ask", mcp.WithString("q", mcp.Required())), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		q, _ := req.RequireString("q")
		res, err := server.ServerFromContext(ctx).RequestElicitation(ctx, mcp.ElicitationRequest{Params: mcp.ElicitationParams{
			Message:         q,
			RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"answer": map[string]any{"type": "string"}}},
		}})
		if err != nil {
			return mcp.NewToolResultError("elicitation failed: " + err.Error()), nil
		}
		return mcp.NewToolResultText(fmt.Sprintf("%s %v", res.Action, res.Content)), nil
	})
	return s
}

type answerer struct{ asked atomic.Int32 }

func (a *answerer) Elicit(ctx context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	a.asked.Add(1)
	if !strings.Contains(req.Params.Message, "[asker, via mcpbroker]") {
		return nil, fmt.Errorf("origin not named in %q", req.Params.Message)
	}
	return &mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept, Content: map[string]any{"answer": "42"}}}, nil
}

func startWith(t *testing.T, cfg Config) string {
	t.Helper()
	_, url := runBroker(t, cfg)
	return url
}

// permissiveConfig is a broker config for tests: dev identity (agent a for
// alice), policies that permit everything and then extra, and one
// in-process downstream server s named name.
func permissiveConfig(t *testing.T, extra, name string, s *server.MCPServer) Config {
	t.Helper()
	dir := t.TempDir()
	pol := `@id("u") permit (principal is Broker::User, action, resource);
@id("a") permit (principal is Broker::Agent, action, resource);
` + extra
	if err := os.WriteFile(filepath.Join(dir, "p.cedar"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.Policies = dir
	cfg.Identity = IdentityConfig{Mode: "dev", DefaultAgent: "spiffe://t.local/agent/a", DefaultInitiator: "alice"}
	cfg.Servers = []ServerConfig{{Name: name, Transport: "in-process", inProcess: name}}
	cfg.inProcess = map[string]*server.MCPServer{name: s}
	return cfg
}

func TestElicitationRelayBothEras(t *testing.T) {
	url := startWith(t, permissiveConfig(t, "", "asker", askServer()))

	for _, era := range []string{mcp.ProtocolVersion20251125, mcp.ProtocolVersion20260728} {
		t.Run(era, func(t *testing.T) {
			a := &answerer{}
			res := askVia(t, url, era, a, "what is the answer?")
			if res.IsError || !strings.Contains(text(res), "accept") || !strings.Contains(text(res), "42") {
				t.Fatalf("result %q isError=%v", text(res), res.IsError)
			}
			if a.asked.Load() != 1 {
				t.Errorf("asked %d times", a.asked.Load())
			}
		})
	}
}

func testLogger(t *testing.T) *slogLogger {
	if testing.Verbose() {
		return newSlog(testWriter{t})
	}
	return newSlog(nil)
}

func TestRelayStateSealed(t *testing.T) {
	r := newRelay()
	alice := agentsIdentity("spiffe://t/agent/a", "alice")
	bob := agentsIdentity("spiffe://t/agent/b", "alice")
	now := time.Now()
	p := &parked{who: alice.Key(), c: &call{id: "c1"}, expires: now.Add(time.Minute)}
	r.add(p)
	a := &ask{key: "k1"}
	state := r.seal(p, a)

	if got, key, err := r.open(state, alice, now); err != nil || got != p || key != "k1" {
		t.Fatalf("open own state: %v %v %q", got, err, key)
	}
	cases := map[string]struct {
		state string
		id    agentsID
		now   time.Time
	}{
		"other identity":  {state, bob, now},
		"expired":         {state, alice, now.Add(2 * time.Minute)},
		"altered payload": {strings.Replace(state, ".", ".x", 1), alice, now},
		"forged mac":      {state[:len(state)-4] + "AAAA", alice, now},
		"garbage":         {"hello", alice, now},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if _, _, err := r.open(tc.state, tc.id, tc.now); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	r.remove(p)
	if _, _, err := r.open(state, alice, now); err == nil {
		t.Fatal("state of a finished call accepted")
	}
}

// TestElicitationDeniedByPolicy: a downstream's elicitation is itself a
// policy decision (Action::"elicit"); denied, it never reaches the agent,
// in either era, and the decision is recorded.
func TestElicitationDeniedByPolicy(t *testing.T) {
	url := startWith(t, permissiveConfig(t,
		`@id("no-elicit") forbid (principal, action == Broker::Action::"elicit", resource == Broker::Tool::"asker/ask");`,
		"asker", askServer()))
	for _, era := range []string{mcp.ProtocolVersion20251125, mcp.ProtocolVersion20260728} {
		t.Run(era, func(t *testing.T) {
			a := &answerer{}
			res := askVia(t, url, era, a, "secret question")
			if !strings.Contains(text(res), "elicitation failed") || a.asked.Load() != 0 {
				t.Fatalf("denied elicitation reached the agent: %q (asked %d)", text(res), a.asked.Load())
			}
		})
	}
}

// answeringClient is an initialized mcp-go client of era at url whose
// elicitation handler is a; it is closed when the test ends.
func answeringClient(t *testing.T, ctx context.Context, url, era string, a client.ElicitationHandler) (*client.Client, *transport.StreamableHTTP) {
	t.Helper()
	tr, err := transport.NewStreamableHTTP(url)
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr, client.WithElicitationHandler(a), client.WithProtocolVersion(era))
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Initialize(ctx, mcp.InitializeRequest{}); err != nil {
		t.Fatal(err)
	}
	return c, tr
}

// askVia calls asker__ask through the broker at url as a client of era
// whose elicitation handler is a.
func askVia(t *testing.T, url, era string, a *answerer, q string) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, _ := answeringClient(t, ctx, url, era, a)
	req := mcp.CallToolRequest{}
	req.Params.Name = "asker__ask"
	req.Params.Arguments = map[string]any{"q": q}
	res, err := c.CallTool(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}
