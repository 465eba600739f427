package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHTTPEdges (case 8): malformed and hostile requests to /mcp get the
// right JSON-RPC errors and statuses, and leave audit records.
func TestHTTPEdges(t *testing.T) {
	const tokA, tokB = "token-of-agent-a-0123456789", "token-of-agent-b-9876543210"
	b, events := tsBroker(t, brokerConfig{
		extra:  "max_body_bytes: 65536\n",
		tokens: map[string]string{agentA: tokA, agentB: tokB},
	})
	cs := connect(t, b.url, eraLegacy, nil, "")
	waitTools(t, cs, "ts__echo", "ts__slow")

	t.Run("malformed JSON", func(t *testing.T) {
		c := &rawHTTP{url: b.url}
		_, h, body := c.post(t, []byte(`{"jsonrpc":"2.0","id":1,"method":`))
		r := decodeResponse(t, h, body)
		if r.Error == nil || r.Error.Code != -32700 {
			t.Errorf("malformed JSON: %s, want JSON-RPC error -32700", body)
		}
	})

	t.Run("body over max_body_bytes", func(t *testing.T) {
		big, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "initialize",
			"params": map[string]any{"protocolVersion": eraLegacy, "capabilities": map[string]any{},
				"clientInfo": map[string]any{"name": strings.Repeat("x", 100<<10), "version": "1"}}})
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
				var body io.Reader = bytes.NewReader(big)
				if chunked {
					body = io.MultiReader(body) // hides the length: no Content-Length
				}
				req, _ := http.NewRequestWithContext(ctxFor(t, 20*time.Second), http.MethodPost, b.url, body)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				rb, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusRequestEntityTooLarge {
					t.Fatalf("status %d (%s), want 413", resp.StatusCode, rb)
				}
				var m rpcMessage
				if err := json.Unmarshal(rb, &m); err != nil || m.Error == nil {
					t.Errorf("413 body %q is not a JSON-RPC error", rb)
				}
			})
		}
		b.waitAudit("request.rejected for the body size", func(e auditEvent) bool {
			return e.Type == "request.rejected" && strings.Contains(e.Detail, "65536")
		})
	})

	t.Run("unknown tool", func(t *testing.T) {
		c := &rawHTTP{url: b.url}
		c.initialize(t)
		r := c.call(t, "tools/call", map[string]any{"name": "nope__missing", "arguments": map[string]any{}})
		if r.Error == nil || r.Error.Code != -32602 {
			t.Errorf("unknown tool: %+v %s, want JSON-RPC error -32602", r.Error, r.Result)
		}
		b.waitAudit("request.rejected for nope__missing", func(e auditEvent) bool {
			return e.Type == "request.rejected" && e.Target == "nope__missing" && e.Decision == "deny"
		})
	})

	t.Run("arguments of the wrong type", func(t *testing.T) {
		c := &rawHTTP{url: b.url}
		c.initialize(t)
		before := len(eventsWith(t, events["ts"], "call echo "))
		r := c.call(t, "tools/call", map[string]any{"name": "ts__echo", "arguments": []any{"text", "x"}})
		reason := ""
		switch {
		case r.Error != nil:
			reason = r.Error.Message
		default:
			var res struct {
				IsError bool           `json:"isError"`
				Meta    map[string]any `json:"_meta"`
			}
			_ = json.Unmarshal(r.Result, &res)
			if !res.IsError {
				t.Errorf("array arguments accepted: %s", r.Result)
			}
			reason, _ = res.Meta["io.mcpbroker/reason"].(string)
		}
		if !strings.Contains(reason, "invalid_arguments") {
			t.Errorf("array arguments: reason %q (error %+v, result %s), want invalid_arguments", reason, r.Error, r.Result)
		}
		if after := len(eventsWith(t, events["ts"], "call echo ")); after != before {
			t.Errorf("the call with array arguments reached the downstream")
		}
	})

	t.Run("session-less cancellation", func(t *testing.T) {
		// Two slow calls with known JSON-RPC ids: one in a legacy session,
		// one in the stateless 2026-07-28 era. A cancellation without a
		// session naming those ids must cancel neither (mcp-go pitfall 2).
		before := len(eventsWith(t, events["ts"], "call slow "))
		legacy := &rawHTTP{url: b.url}
		legacy.initialize(t)
		var wg sync.WaitGroup
		results := make([]string, 2)
		wg.Add(2)
		ctx := ctxFor(t, 30*time.Second)
		go func() {
			defer wg.Done()
			_, _, rb, err := legacy.postErr(ctx, []byte(`{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"ts__slow","arguments":{"ms":1500,"steps":0}}}`))
			results[0] = string(rb)
			if err != nil {
				results[0] = err.Error()
			}
		}()
		go func() {
			defer wg.Done()
			results[1] = modernCall(t, b.url, 78, "ts__slow", map[string]any{"ms": 1500, "steps": 0})
		}()
		poll(t, 10*time.Second, "both slow calls to reach the downstream", func() bool {
			return len(eventsWith(t, events["ts"], "call slow ")) >= before+2
		})
		anon := &rawHTTP{url: b.url}
		for _, id := range []int{77, 78} {
			body := fmt.Sprintf(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d,"reason":"hostile"}}`, id)
			status, _, rb := anon.post(t, []byte(body))
			if status != http.StatusAccepted {
				t.Errorf("session-less cancellation: HTTP %d %s, want 202", status, rb)
			}
		}
		wg.Wait()
		for i, r := range results {
			if !strings.Contains(r, `"done"`) {
				t.Errorf("slow call %d was disturbed: %s", i, r)
			}
		}
		if c := eventsWith(t, events["ts"], "cancelled "); len(c) > 0 {
			t.Errorf("a session-less cancellation cancelled a downstream call: %v", c)
		}
	})

	t.Run("wrong Origin", func(t *testing.T) {
		c := &rawHTTP{url: b.url, origin: "http://evil.example"}
		body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initParams})
		status, _, rb := c.post(t, body)
		if status != http.StatusForbidden {
			t.Errorf("Origin evil.example: HTTP %d %s, want 403", status, rb)
		}
		b.waitAudit("request.rejected for the origin", func(e auditEvent) bool {
			return e.Type == "request.rejected" && strings.Contains(e.Detail, "evil.example")
		})
		// The broker's own origin passes.
		own := &rawHTTP{url: b.url, origin: strings.TrimSuffix(b.url, "/mcp")}
		if status, _, rb := own.post(t, body); status != http.StatusOK {
			t.Errorf("own Origin: HTTP %d %s", status, rb)
		}
	})

	t.Run("session of another agent", func(t *testing.T) {
		a := &rawHTTP{url: b.url, token: tokA}
		a.initialize(t)
		if a.session == "" {
			t.Fatal("no session ID")
		}
		stolen := &rawHTTP{url: b.url, token: tokB, session: a.session}
		body := []byte(`{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{}}`)
		status, _, rb := stolen.post(t, body)
		if status != http.StatusForbidden {
			t.Errorf("agent B with agent A's session: HTTP %d %s, want 403", status, rb)
		}
		// Without a token the default agent acts: also not A.
		anon := &rawHTTP{url: b.url, session: a.session}
		if status, _, rb := anon.post(t, body); status != http.StatusForbidden {
			t.Errorf("default agent with agent A's session: HTTP %d %s, want 403", status, rb)
		}
		b.waitAudit("request.rejected for the stolen session", func(e auditEvent) bool {
			return e.Type == "request.rejected" && e.Session == a.session && e.Agent == agentB
		})
		// A's session still works for A, and the call is A's.
		r := a.call(t, "tools/call", map[string]any{"name": "ts__echo", "arguments": map[string]any{"text": "mine"}})
		if r.Error != nil || !strings.Contains(string(r.Result), "mine") {
			t.Fatalf("agent A in its own session: %+v %s", r.Error, r.Result)
		}
		b.waitAudit("agent A's call", func(e auditEvent) bool {
			return e.Type == "call.decided" && e.Agent == agentA && e.Target == "ts__echo"
		})
	})

	t.Run("unknown token", func(t *testing.T) {
		c := &rawHTTP{url: b.url, token: "not-a-configured-token"}
		body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initParams})
		status, h, rb := c.post(t, body)
		if status != http.StatusUnauthorized || !strings.Contains(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("unknown token: HTTP %d %q %s, want 401 with a Bearer challenge", status, h.Get("WWW-Authenticate"), rb)
		}
		b.waitAudit("auth.failed", func(e auditEvent) bool { return e.Type == "auth.failed" })
	})
}

// modernCall sends one stateless 2026-07-28 tools/call and returns the raw
// result (or error) JSON.
func modernCall(t testing.TB, url string, id int, name string, args any) string {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": map[string]any{
		"name": name, "arguments": args,
		"_meta": map[string]any{
			"io.modelcontextprotocol/protocolVersion":    eraModern,
			"io.modelcontextprotocol/clientCapabilities": map[string]any{},
			"io.modelcontextprotocol/clientInfo":         map[string]any{"name": "mcpbroker-e2e-raw", "version": "1"},
		}}})
	req, _ := http.NewRequestWithContext(ctxFor(t, 30*time.Second), http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", eraModern)
	req.Header.Set("Mcp-Method", "tools/call")
	req.Header.Set("Mcp-Name", name)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("modern call: %v", err)
		return ""
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("HTTP %d: %s", resp.StatusCode, rb)
	}
	var m rpcMessage
	for _, line := range strings.Split(string(rb), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(line, "data:"))
		if json.Unmarshal([]byte(line), &m) == nil && (m.Result != nil || m.Error != nil) {
			if m.Error != nil {
				return fmt.Sprintf("error %d %s", m.Error.Code, m.Error.Message)
			}
			return string(m.Result)
		}
	}
	return string(rb)
}
