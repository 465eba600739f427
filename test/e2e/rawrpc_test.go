package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// rpcMessage is a JSON-RPC response as received, result kept raw so that
// schemas can be compared byte for byte.
type rpcMessage struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	} `json:"error"`
}

// rawHTTP speaks JSON-RPC over streamable HTTP by hand, for byte-exact
// comparisons and for malformed input.
type rawHTTP struct {
	url     string
	token   string
	session string
	origin  string
	nextID  int
}

// post sends body and returns the status, headers and raw body.
func (c *rawHTTP) post(t testing.TB, body []byte) (int, http.Header, []byte) {
	t.Helper()
	status, h, b, err := c.postErr(ctxFor(t, 30*time.Second), body)
	if err != nil {
		t.Fatal(err)
	}
	return status, h, b
}

// postErr is post for goroutines other than the test's: it never calls
// t.Fatal.
func (c *rawHTTP) postErr(ctx context.Context, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if c.session != "" {
		req.Header.Set("Mcp-Session-Id", c.session)
		req.Header.Set("Mcp-Protocol-Version", eraLegacy)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.origin != "" {
		req.Header.Set("Origin", c.origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("POST %s: %w", c.url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read response: %w", err)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// decodeResponse finds the JSON-RPC response in a JSON or SSE body.
func decodeResponse(t testing.TB, header http.Header, body []byte) rpcMessage {
	t.Helper()
	var msgs [][]byte
	if strings.HasPrefix(header.Get("Content-Type"), "text/event-stream") {
		for _, line := range strings.Split(string(body), "\n") {
			if d, ok := strings.CutPrefix(line, "data:"); ok {
				msgs = append(msgs, []byte(strings.TrimSpace(d)))
			}
		}
	} else {
		msgs = append(msgs, body)
	}
	for _, m := range msgs {
		var r rpcMessage
		if json.Unmarshal(m, &r) == nil && r.Method == "" && (r.Result != nil || r.Error != nil) {
			return r
		}
	}
	t.Fatalf("no JSON-RPC response in %q", body)
	return rpcMessage{}
}

// call sends a request and returns the response.
func (c *rawHTTP) call(t testing.TB, method string, params any) rpcMessage {
	t.Helper()
	c.nextID++
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": c.nextID, "method": method, "params": params})
	status, h, b := c.post(t, body)
	if status != http.StatusOK {
		t.Fatalf("%s: HTTP %d: %s", method, status, b)
	}
	return decodeResponse(t, h, b)
}

var initParams = map[string]any{
	"protocolVersion": eraLegacy,
	// The capabilities the broker declares to its downstreams, so that
	// servers that register tools by client capability (server-everything)
	// show a direct client the same set.
	"capabilities": map[string]any{"elicitation": map[string]any{}, "roots": map[string]any{}, "sampling": map[string]any{}},
	"clientInfo":   map[string]any{"name": "mcpbroker-e2e-raw", "version": "1"},
}

// initialize runs the 2025-11-25 handshake and keeps the session ID.
func (c *rawHTTP) initialize(t testing.TB) {
	t.Helper()
	c.nextID++
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": c.nextID, "method": "initialize", "params": initParams})
	status, h, b := c.post(t, body)
	if status != http.StatusOK {
		t.Fatalf("initialize: HTTP %d: %s", status, b)
	}
	if r := decodeResponse(t, h, b); r.Error != nil {
		t.Fatalf("initialize: %s", b)
	}
	c.session = h.Get("Mcp-Session-Id")
	status, _, b = c.post(t, []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))
	if status != http.StatusAccepted && status != http.StatusOK {
		t.Fatalf("notifications/initialized: HTTP %d: %s", status, b)
	}
}

// rawTool is a tools/list entry with its schemas as sent.
type rawTool struct {
	Name         string          `json:"name"`
	InputSchema  json.RawMessage `json:"inputSchema"`
	OutputSchema json.RawMessage `json:"outputSchema"`
}

func parseRawTools(t testing.TB, r rpcMessage) (tools []rawTool, cursor string) {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("tools/list: error %d %s", r.Error.Code, r.Error.Message)
	}
	var res struct {
		Tools      []rawTool `json:"tools"`
		NextCursor string    `json:"nextCursor"`
	}
	if err := json.Unmarshal(r.Result, &res); err != nil {
		t.Fatalf("tools/list result: %v", err)
	}
	return res.Tools, res.NextCursor
}

// rawToolsHTTP lists tools over a fresh raw legacy session.
func rawToolsHTTP(t testing.TB, url, token string) map[string]rawTool {
	t.Helper()
	c := &rawHTTP{url: url, token: token}
	c.initialize(t)
	out := map[string]rawTool{}
	cursor := ""
	for {
		params := map[string]any{}
		if cursor != "" {
			params["cursor"] = cursor
		}
		ts, next := parseRawTools(t, c.call(t, "tools/list", params))
		for _, tool := range ts {
			// The broker's own tools (broker__delegate, broker__task) are
			// not the downstream's.
			if strings.HasPrefix(tool.Name, "broker__") {
				continue
			}
			out[tool.Name] = tool
		}
		if next == "" {
			return out
		}
		cursor = next
	}
}

// rawToolsStdio starts testserver -stdio directly and lists its tools.
func rawToolsStdio(t testing.TB) map[string]rawTool {
	t.Helper()
	cmd := exec.Command(testserverBin(t), "-stdio", "-name", "direct")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	lines := make(chan []byte)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			lines <- append([]byte(nil), sc.Bytes()...)
		}
		close(lines)
	}()
	send := func(v any) {
		b, _ := json.Marshal(v)
		if _, err := stdin.Write(append(b, '\n')); err != nil {
			t.Fatal(err)
		}
	}
	await := func(id int) rpcMessage {
		timeout := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("testserver closed stdout")
				}
				var m rpcMessage
				if json.Unmarshal(l, &m) == nil && string(m.ID) == fmt.Sprint(id) && m.Method == "" {
					return m
				}
			case <-timeout:
				t.Fatalf("no response to id %d", id)
			}
		}
	}
	send(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initParams})
	await(1)
	send(map[string]any{"jsonrpc": "2.0", "method": "notifications/initialized"})
	send(map[string]any{"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": map[string]any{}})
	ts, next := parseRawTools(t, await(2))
	if next != "" {
		t.Fatal("testserver paginates tools/list unexpectedly")
	}
	out := map[string]rawTool{}
	for _, tool := range ts {
		out[tool.Name] = tool
	}
	return out
}
