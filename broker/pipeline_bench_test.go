package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/policies"
)

// The benchmarks in this file measure the broker's own work per call, with
// no network: the face's decode and checks (guard), admission (identity,
// task, three Cedar passes, the decision record) and a whole tools/call
// through mcp-go's HandleMessage to an in-process downstream. They run only
// under -bench. Profile with
//
//	go test -run '^$' -bench BenchmarkPipeline -cpuprofile cpu.out ./broker

const benchPolicy = `
@id("users") permit (principal == Broker::User::"alice", action, resource);
@id("agents") permit (principal in Broker::AgentClass::"bench", action, resource) when { resource.readOnlyHint || context.chain.depth <= 3 };
`

// benchRig is a running broker with the kv server in process and a task
// for the coder delegated by the planner: three Cedar passes per call.
type benchRig struct {
	b      *Broker
	handle string
	ident  agents.Identity
}

func newBenchRig(b *testing.B, nosync bool) *benchRig {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.cedar"), []byte(benchPolicy), 0o600); err != nil {
		b.Fatal(err)
	}
	tok := filepath.Join(dir, "coder.token")
	if err := os.WriteFile(tok, []byte("coder-token-1"), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg := Defaults()
	cfg.Policies = dir
	cfg.Identity = IdentityConfig{Mode: "dev", Tokens: []DevToken{{TokenFile: tok, Agent: coder, Initiator: "alice"}}}
	cfg.Agents = []AgentConfig{{ID: planner, Classes: []string{"bench"}}, {ID: coder, Classes: []string{"bench"}}}
	cfg.Servers = []ServerConfig{{Name: "kv", Transport: "in-process", inProcess: "kv", Trusted: true}}
	cfg.inProcess = map[string]*server.MCPServer{"kv": kvServer()}
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = b.TempDir()
	ready := make(chan string, 1)
	br, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "bench",
		StoreNoSync: nosync, Ready: func(u string) { ready <- u }})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- br.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-ready:
	case err := <-done:
		b.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, ok := br.pool.Snapshot().Tool("kv__get"); ok {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("kv__get not in the catalog")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h, _, err := br.tasks.Grant(agents.Task{Agent: coder, Initiator: "alice", Chain: []string{planner},
		Tools: []string{"kv__*"}, ExpiresAt: time.Now().Add(time.Hour), Source: "delegate"})
	if err != nil {
		b.Fatal(err)
	}
	return &benchRig{b: br, handle: h, ident: agents.Identity{Agent: coder, Initiator: "alice", InitiatorKind: agents.InitiatorUser, Method: "bench"}}
}

func (r *benchRig) ctx() context.Context {
	ctx := agents.WithIdentity(context.Background(), r.ident)
	return context.WithValue(ctx, presentedKey{}, presented{task: r.handle})
}

var benchCall = []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"kv__get","arguments":{"key":"k","path":"/srv/a/../b"}}}`)

// BenchmarkPipelineCall is one whole tools/call through the broker's MCP
// server (decode, admit with three passes, decision record, forward to the
// in-process kv server, outcome record, encode), with records fsynced
// (store=sync) or not (store=nosync), serially and with 16 callers.
func BenchmarkPipelineCall(b *testing.B) {
	for _, nosync := range []bool{false, true} {
		r := newBenchRig(b, nosync)
		ctx := r.ctx()
		check := func(res mcp.JSONRPCMessage) {
			out, _ := json.Marshal(res)
			if !bytes.Contains(out, []byte("value of k")) {
				b.Fatalf("unexpected response: %s", out)
			}
		}
		check(r.b.mcp.HandleMessage(ctx, benchCall))
		name := map[bool]string{false: "store=sync", true: "store=nosync"}[nosync]
		b.Run(name+"/callers=1", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.b.mcp.HandleMessage(ctx, benchCall)
			}
		})
		b.Run(name+"/callers=16", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(8) // 8 × GOMAXPROCS callers
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r.b.mcp.HandleMessage(ctx, benchCall)
				}
			})
		})
	}
}

// BenchmarkPipelineAdmit is admission alone: canonicalization, task and
// chain resolution, three Cedar passes, the task budget and the decision
// record (records not fsynced, so that the CPU work shows).
func BenchmarkPipelineAdmit(b *testing.B) {
	r := newBenchRig(b, true)
	ctx := r.ctx()
	tl, _ := r.b.pool.Snapshot().Tool("kv__get")
	target := policies.Target{Kind: policies.TargetTool, Server: tl.Server, Name: tl.Name, Exposed: tl.Exposed,
		ReadOnly: tl.ReadOnly, Destructive: tl.Destructive, Idempotent: tl.Idempotent, OpenWorld: tl.OpenWorld, RiskTags: tl.RiskTags}
	raw := []byte(`{"key":"k","path":"/srv/a/../b"}`)
	if _, reason := r.b.admit(ctx, "tools/call", policies.ActionCallTool, target, raw, nil); reason != "" {
		b.Fatalf("refused: %s", reason)
	}
	b.ReportAllocs()
	for b.Loop() {
		r.b.admit(ctx, "tools/call", policies.ActionCallTool, target, raw, nil)
	}
}

// BenchmarkFaceGuard is the HTTP face's own work on a request before mcp-go
// sees it: body read and cap, authentication, the session-less and
// cancellation peeks. The next handler does nothing.
func BenchmarkFaceGuard(b *testing.B) {
	r := newBenchRig(b, true)
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })
	h := r.b.guard(next)
	for _, size := range []int{0, 100 << 10} {
		body := benchCall
		if size > 0 {
			body = []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"kv__get","arguments":{"key":"k","blob":%q},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, strings.Repeat("x", size)))
		} else {
			body = bytes.Replace(body, []byte(`"params":{`), []byte(`"params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"},`), 1)
		}
		b.Run(fmt.Sprintf("body=%dB", len(body)), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/mcp", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer coder-token-1")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusAccepted {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkFastLane is a whole 2026-07-28 tools/call over the HTTP face
// (guard, decode, admit with three passes, decision record, forward to the
// in-process kv server, outcome record, encode; records not fsynced),
// served by the fast lane (path=lane) or by mcp-go (path=mcp-go, the lane
// off), in memory with httptest: the difference is the lane's saving.
func BenchmarkFastLane(b *testing.B) {
	r := newBenchRig(b, true)
	stream := server.NewStreamableHTTPServer(r.b.mcp, server.WithSessionIdManager(r.b.sessions))
	body := []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"kv__get","arguments":{"key":"k","path":"/srv/a/../b"},` +
		`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}`)
	lane := r.b.fast
	for _, path := range []string{"lane", "mcp-go"} {
		b.Run("path="+path, func(b *testing.B) {
			r.b.fast = lane
			if path == "mcp-go" {
				r.b.fast = nil
			}
			h := r.b.guard(stream)
			served := lane.served.Load()
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/mcp", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("Authorization", "Bearer coder-token-1")
				req.Header.Set(HeaderTask, r.handle)
				req.Header.Set(mcp.HeaderProtocolVersion, "2026-07-28")
				req.Header.Set("Mcp-Method", "tools/call")
				req.Header.Set("Mcp-Name", "kv__get")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK || !bytes.Contains(w.Body.Bytes(), []byte("value of k")) {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
			if got := lane.served.Load() - served; (path == "lane") != (got > 0) {
				b.Fatalf("lane served %d calls on path %s", got, path)
			}
		})
	}
	r.b.fast = lane
}
