package broker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/broker/audit"
)

// TestLogOnlyRollout: a @mode("log_only") forbid and a candidate set are
// evaluated and recorded, never enforced.
func TestLogOnlyRollout(t *testing.T) {
	live, cand := t.TempDir(), t.TempDir()
	write := func(dir, text string) {
		if err := os.WriteFile(filepath.Join(dir, "p.cedar"), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(live, permitAll+`
@id("shadow-no-put") @mode("log_only")
forbid (principal, action, resource == Broker::Tool::"kv/put");`)
	write(cand, `@id("cand-users") permit (principal is Broker::User, action, resource);
@id("cand-agents-read-only") permit (principal is Broker::Agent, action, resource) when { resource.readOnlyHint };`)
	cfg := Defaults()
	cfg.Policies, cfg.CandidatePolicies = live, cand
	cfg.Identity = IdentityConfig{Mode: "dev", DefaultAgent: "spiffe://t.local/agent/a", DefaultInitiator: "alice"}
	cfg.Servers = []ServerConfig{{Name: "kv", Transport: "in-process", inProcess: "kv", Trusted: true}}
	cfg.inProcess = map[string]*server.MCPServer{"kv": kvServer()}
	b, url := runBroker(t, cfg)
	c := connect(t, url, mcp.ProtocolVersion20251125)
	if res := callTool(t, c, "kv__put", map[string]any{"key": "k"}); res.IsError {
		t.Fatalf("log-only forbid enforced: %q", text(res))
	}
	es := listLive(t, b.cfg.DataDir, audit.Filter{Type: audit.CallDecided, Target: "kv__put"})
	if len(es) != 1 {
		t.Fatalf("records: %d", len(es))
	}
	ev := es[0].Event
	if ev.Decision != "allow" || ev.ShadowOutcome != "deny" || !strings.Contains(strings.Join(ev.Shadow, ","), "shadow-no-put") {
		t.Errorf("shadow not recorded: %+v", ev)
	}
	if !strings.HasPrefix(ev.Candidate, "deny ") {
		t.Errorf("candidate (agents read-only) would deny put: %q", ev.Candidate)
	}
}
