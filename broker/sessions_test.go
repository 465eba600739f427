package broker

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/broker/store"
)

// runBroker serves cfg until the returned stop is called.

func rawPost(t *testing.T, url, sid, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid != "" {
		req.Header.Set(server.HeaderKeySessionID, sid)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

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
	resp := rawPost(t, url, "", initBody)
	sid := resp.Header.Get(server.HeaderKeySessionID)
	if resp.StatusCode != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %d %q", resp.StatusCode, sid)
	}
	const list = `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	if r := rawPost(t, url, sid, list); r.StatusCode != http.StatusOK {
		t.Fatalf("tools/list: %d", r.StatusCode)
	}
	stop()

	_, url, stop = startBroker(t, cfg)
	if r := rawPost(t, url, sid, list); r.StatusCode != http.StatusOK {
		t.Fatalf("after restart: tools/list with the old session: %d", r.StatusCode)
	}
	if code := adminPost(t, cfg.DataDir, SessionsPath+"/"+sid+"/revoke"); code != http.StatusOK {
		t.Fatalf("revoke: %d", code)
	}
	if code := adminPost(t, cfg.DataDir, SessionsPath+"/mcpb-nope/revoke"); code != http.StatusNotFound {
		t.Fatalf("revoke unknown: %d", code)
	}
	if r := rawPost(t, url, sid, list); r.StatusCode != http.StatusForbidden {
		t.Fatalf("revoked session: %d", r.StatusCode)
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
