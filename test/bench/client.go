package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Eras the harness speaks to every target.
const (
	Legacy = "2025-11-25"
	Modern = "2026-07-28"
)

// headers adds the broker's credential and task handle to every request.
type headers struct {
	token, handle string
	next          http.RoundTripper
}

func (h headers) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if h.token != "" {
		r.Header.Set("Authorization", "Bearer "+h.token)
	}
	if h.handle != "" {
		r.Header.Set("Mcp-Broker-Task", h.handle)
	}
	return h.next.RoundTrip(r)
}

// Connect opens one official go-sdk client session to url, pinned to era,
// with its own HTTP transport (its own connections). token and handle, if
// set, are sent as the bearer credential and the broker task handle.
func Connect(ctx context.Context, url, era, token, handle string) (*mcp.ClientSession, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 4
	tr := &mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: headers{token: token, handle: handle, next: t}}}
	c := mcp.NewClient(&mcp.Implementation{Name: "mcpbroker-bench", Version: "1"}, nil)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cs, err := c.Connect(cctx, tr, &mcp.ClientSessionOptions{ProtocolVersion: era})
	if err != nil {
		return nil, fmt.Errorf("connect %s (%s): %w", url, era, err)
	}
	if got := cs.InitializeResult().ProtocolVersion; got != era {
		_ = cs.Close()
		return nil, fmt.Errorf("connect %s: negotiated %s, want %s", url, got, era)
	}
	return cs, nil
}

// OpenIdleSessions opens n 2025-11-25 sessions on url with bare HTTP
// (initialize, then notifications/initialized) and keeps nothing but their
// IDs, so that the heap they add is the server's. They are never closed:
// stop the target to end them.
func OpenIdleSessions(ctx context.Context, url, token string, n int) ([]string, error) {
	hc := &http.Client{Transport: headers{token: token, next: pooledHTTPClient().Transport}}
	init := []byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"idle","version":"1"}}}`)
	inited := []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	ids := make([]string, 0, n)
	for range n {
		resp, err := post(ctx, hc, url, "", init)
		if err != nil {
			return ids, err
		}
		sid := resp.Header.Get("Mcp-Session-Id")
		if sid == "" {
			return ids, fmt.Errorf("initialize: no session ID (status %d)", resp.StatusCode)
		}
		if _, err := post(ctx, hc, url, sid, inited); err != nil {
			return ids, err
		}
		ids = append(ids, sid)
	}
	return ids, nil
}

func post(ctx context.Context, hc *http.Client, url, sid string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Mcp-Protocol-Version", Legacy)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode >= 300 {
		return resp, fmt.Errorf("POST %s: status %d", url, resp.StatusCode)
	}
	return resp, nil
}
