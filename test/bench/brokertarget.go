package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpbroker/mcpbroker/broker"
	"github.com/mcpbroker/mcpbroker/broker/store"
)

// Agents and tokens of the broker target. The planner works for alice
// (team engineering) under its default task and delegates a sub-task to the
// coder; the benchmark clients are the coder presenting that task handle, so
// every call is decided in three Cedar passes (alice, planner, coder).
const (
	Planner      = "spiffe://bench.local/agent/planner"
	Coder        = "spiffe://bench.local/agent/coder"
	plannerToken = "bench-planner-token"
	coderToken   = "bench-coder-token"
)

// BrokerOptions shape the broker target.
type BrokerOptions struct {
	// Era pins the broker's downstream hop ("" negotiates), as the proxy's.
	Era string
	// Policies is the size of the operator policy set (at least 4); filler
	// policies follow the shapes of policies/scale_bench_test.go.
	Policies int
	// NoSync writes records without fsync (the comparison run only).
	NoSync bool
	// Logger defaults to discarding everything.
	Logger *slog.Logger
}

// BrokerTarget is a running in-process mcpbroker and the task handle its
// benchmark clients present.
type BrokerTarget struct {
	URL    string
	Handle string
	dir    string
	b      *broker.Broker
	cancel context.CancelFunc
	done   chan error
}

// StartBroker provisions and runs a broker in front of downstreamURL in a
// fresh temporary directory, then delegates the benchmark sub-task.
func StartBroker(ctx context.Context, downstreamURL string, o BrokerOptions) (*BrokerTarget, error) {
	dir, err := os.MkdirTemp("", "mcpbroker-bench-")
	if err != nil {
		return nil, err
	}
	bt := &BrokerTarget{dir: dir}
	ok := false
	defer func() {
		if !ok {
			_ = bt.Close()
		}
	}()
	pdir := filepath.Join(dir, "policies")
	if err := os.MkdirAll(pdir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(pdir, "bench.cedar"), []byte(PolicyText(o.Policies)), 0o600); err != nil {
		return nil, err
	}
	for name, tok := range map[string]string{"planner.token": plannerToken, "coder.token": coderToken} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(tok), 0o600); err != nil {
			return nil, err
		}
	}
	cfg := broker.Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Policies = pdir
	cfg.LogLevel = "error"
	cfg.Identity = broker.IdentityConfig{Mode: "dev", Tokens: []broker.DevToken{
		{TokenFile: filepath.Join(dir, "planner.token"), Agent: Planner, Initiator: "alice", Tenant: "acme", Groups: []string{"engineering"}},
		{TokenFile: filepath.Join(dir, "coder.token"), Agent: Coder, Initiator: "alice", Tenant: "acme"}, // acts for alice, in the planner's sub-task
	}}
	cfg.Agents = []broker.AgentConfig{
		{ID: Planner, Classes: []string{"bench"}, MaxDepth: 3,
			DefaultTask: &broker.DefaultTaskConfig{Tools: []string{"bench__*"}, TTL: broker.Duration(24 * time.Hour), Purpose: "benchmark"}},
		{ID: Coder, Classes: []string{"bench"}, MaxDepth: 3},
	}
	cfg.Servers = []broker.ServerConfig{{Name: "bench", Transport: "streamable-http", URL: downstreamURL, Trusted: true, ProtocolVersion: o.Era}}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ready := make(chan string, 1)
	b, err := broker.New(cfg, broker.Options{Logger: log, Version: "bench", StoreNoSync: o.NoSync, Ready: func(u string) { ready <- u }})
	if err != nil {
		return nil, err
	}
	bt.b = b
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	bt.cancel, bt.done = cancel, make(chan error, 1)
	go func() { bt.done <- b.Run(rctx) }()
	select {
	case bt.URL = <-ready:
	case err := <-bt.done:
		bt.done <- err
		return nil, fmt.Errorf("broker stopped: %w", err)
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("broker not ready")
	}
	// The planner waits for the catalog, then delegates the sub-task.
	pl, err := Connect(ctx, bt.URL, "2025-11-25", plannerToken, "")
	if err != nil {
		return nil, err
	}
	defer pl.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := pl.CallTool(ctx, &mcp.CallToolParams{Name: "broker__delegate", Arguments: map[string]any{
			"agent": Coder, "tools": []string{"bench__*"}, "purpose": "benchmark clients",
		}})
		if err == nil && !res.IsError {
			var out struct {
				Handle string `json:"handle"`
			}
			if tc, ok := res.Content[0].(*mcp.TextContent); ok {
				_ = json.Unmarshal([]byte(tc.Text), &out)
			}
			bt.Handle = out.Handle
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("delegate: %v %v", err, resultText(res))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if bt.Handle == "" {
		return nil, fmt.Errorf("delegate returned no handle")
	}
	// Wait until the downstream's tools are in the catalog.
	cc, err := Connect(ctx, bt.URL, "2025-11-25", coderToken, bt.Handle)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	for {
		res, err := cc.CallTool(ctx, &mcp.CallToolParams{Name: "bench__echo", Arguments: map[string]any{"text": "ready"}})
		if err == nil && !res.IsError {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("broker: bench__echo not callable: %v %s", err, resultText(res))
		}
		time.Sleep(100 * time.Millisecond)
	}
	ok = true
	return bt, nil
}

// CommitStats is the broker store's group-commit counters.
func (bt *BrokerTarget) CommitStats() store.CommitStats { return bt.b.CommitStats() }

// Close stops the broker and removes its directory.
func (bt *BrokerTarget) Close() error {
	var err error
	if bt.cancel != nil {
		bt.cancel()
		select {
		case err = <-bt.done:
		case <-time.After(30 * time.Second):
			err = fmt.Errorf("broker did not stop")
		}
	}
	_ = os.RemoveAll(bt.dir)
	return err
}

func resultText(res *mcp.CallToolResult) string {
	if res == nil {
		return ""
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// PolicyText is an operator policy set of n policies (n ≥ 4): four that
// allow the benchmark chain, and n-4 fillers in equal shares of five shapes
// (class grants, team grants, agent-to-tool grants, argument forbids and
// approval forbids on other servers' tools), over a universe of 20 servers,
// 400 agents, 200 users and 10 teams, as in policies/scale_bench_test.go.
func PolicyText(n int) string {
	var b strings.Builder
	b.WriteString(`@id("bench-users")
permit (principal == Broker::User::"alice", action == Broker::Action::"call_tool", resource in Broker::ToolServer::"bench");
@id("bench-users-broker")
permit (principal is Broker::User in Broker::Team::"engineering", action == Broker::Action::"call_tool", resource in Broker::ToolServer::"broker");
@id("bench-agents")
permit (principal in Broker::AgentClass::"bench", action == Broker::Action::"call_tool", resource in Broker::ToolServer::"bench")
when { resource.readOnlyHint || context.chain.depth <= 3 };
@id("bench-agents-broker")
permit (principal in Broker::AgentClass::"bench", action == Broker::Action::"call_tool", resource in Broker::ToolServer::"broker");
`)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range max(n-4, 0) {
		s, t := rng.IntN(20), rng.IntN(15)
		fmt.Fprintf(&b, "@id(\"gen-%04d\")\n", i)
		switch i % 5 {
		case 0:
			fmt.Fprintf(&b, `permit (principal in Broker::AgentClass::"c%d", action == Broker::Action::"call_tool", resource in Broker::ToolServer::"s%d") when { resource.readOnlyHint || context.chain.depth == 1 };`, rng.IntN(20), s)
		case 1:
			fmt.Fprintf(&b, `permit (principal is Broker::User in Broker::Team::"t%d", action in Broker::Action::"mcp", resource in Broker::ToolServer::"s%d");`, rng.IntN(10), s)
		case 2:
			fmt.Fprintf(&b, `permit (principal == Broker::Agent::"spiffe://example.org/a%d", action, resource == Broker::Tool::"s%d/t%d");`, rng.IntN(400), s, t)
		case 3:
			fmt.Fprintf(&b, `forbid (principal, action == Broker::Action::"call_tool", resource == Broker::Tool::"s%d/t%d") unless { context.args has amount && context.args.amount < %d };`, s, t, 1000+rng.IntN(20000))
		case 4:
			fmt.Fprintf(&b, "@approval(\"required\")\n"+`forbid (principal is Broker::Agent in Broker::User::"u%d", action, resource == Broker::Tool::"s%d/t%d") unless { context has approval && context.approval.granted && context.approval.callId == context.callId };`, rng.IntN(200), s, t)
		}
		b.WriteString("\n")
	}
	return b.String()
}
