package broker

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/broker/store"
)

// runBroker serves cfg until the returned stop is called.

func adminPost(t *testing.T, dir, path string) int {
	t.Helper()
	sock := filepath.Join(dir, AdminSocket)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Post("http://mcpbroker"+path, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A session survives a restart bound to the same identity; a revoked
// session's next request is refused and recorded, and the revocation
// survives a restart too.
func TestSessionsPersistAndRevoke(t *testing.T) {
	cfg := DemoConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	_, url, stop := startBroker(t, cfg)
	code, _, h := rawPost(t, context.Background(), url, "", nil, initBody)
	sid := h.Get(server.HeaderKeySessionID)
	if code != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %d %q", code, sid)
	}
	const list = `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	v := map[string]string{"Mcp-Protocol-Version": "2025-06-18"}
	if c, _, _ := rawPost(t, context.Background(), url, sid, v, list); c != http.StatusOK {
		t.Fatalf("tools/list: %d", c)
	}
	stop()

	_, url, stop = startBroker(t, cfg)
	if c, _, _ := rawPost(t, context.Background(), url, sid, v, list); c != http.StatusOK {
		t.Fatalf("after restart: tools/list with the old session: %d", c)
	}
	if code := adminPost(t, cfg.DataDir, SessionsPath+"/"+sid+"/revoke"); code != http.StatusOK {
		t.Fatalf("revoke: %d", code)
	}
	if code := adminPost(t, cfg.DataDir, SessionsPath+"/mcpb-nope/revoke"); code != http.StatusNotFound {
		t.Fatalf("revoke unknown: %d", code)
	}
	if c, _, _ := rawPost(t, context.Background(), url, sid, v, list); c != http.StatusForbidden {
		t.Fatalf("revoked session: %d", c)
	}
	es := listLive(t, cfg.DataDir, audit.Filter{Type: audit.RequestRejected, Session: sid})
	if len(es) == 0 || es[len(es)-1].Event.Detail != "session revoked" {
		t.Fatalf("refusal not recorded: %+v", es)
	}
	stop()

	st, err := store.Open(filepath.Join(cfg.DataDir, DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.ListSessions()
	if err != nil || len(recs) != 1 || recs[0].ID != sid || recs[0].State() != "revoked" || recs[0].Agent != "spiffe://demo.local/agent/dev" {
		t.Fatalf("stored sessions: %v %+v", err, recs)
	}
}
