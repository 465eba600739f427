package broker

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// TestAuditFailureDenies: when the decision record cannot be written, the
// call is refused and never reaches the downstream (fail closed).
func TestAuditFailureDenies(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.cedar"), []byte(permitAll), 0o600); err != nil {
		t.Fatal(err)
	}
	var called atomic.Int32
	ds := server.NewMCPServer("counted", "1")
	ds.AddTool(mcp.NewTool("hit"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		called.Add(1)
		return mcp.NewToolResultText("hit"), nil
	})
	cfg := Defaults()
	cfg.Policies = dir
	cfg.Identity = IdentityConfig{Mode: "dev", DefaultAgent: "spiffe://t.local/agent/a", DefaultInitiator: "alice"}
	cfg.Servers = []ServerConfig{{Name: "counted", Transport: "in-process", inProcess: "counted"}}
	cfg.inProcess = map[string]*server.MCPServer{"counted": ds}
	b, url := runBroker(t, cfg)
	c := connect(t, url, mcp.ProtocolVersion20251125)
	if res := callTool(t, c, "counted__hit", nil); res.IsError || called.Load() != 1 {
		t.Fatalf("healthy call: %q, downstream calls %d", text(res), called.Load())
	}

	// The ledger becomes unwritable (the store is gone from under it).
	if err := b.store.Close(); err != nil {
		t.Fatal(err)
	}
	res := callTool(t, c, "counted__hit", nil)
	if reasonOf(res) != string(ReasonInternal) {
		t.Fatalf("call without a decision record: %q", text(res))
	}
	if called.Load() != 1 {
		t.Fatalf("the downstream was called without a decision record (%d calls)", called.Load())
	}
}
