package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/broker/audit"
)

// httpDownstream serves askServer plus echo, fail, boom, big and block over
// streamable HTTP on 127.0.0.1, and records the JSON-RPC id of each
// tools/call it receives. gone makes it answer 404 (a lost session).
type httpDownstream struct {
	url     string
	gone    atomic.Bool
	mu      sync.Mutex
	ids     []string
	started chan struct{} // block's handler runs
	ended   chan struct{} // block's context ended
}

func startHTTPDownstream(t *testing.T) *httpDownstream {
	t.Helper()
	d := &httpDownstream{started: make(chan struct{}, 1), ended: make(chan struct{}, 1)}
	hooks := &server.Hooks{}
	hooks.AddBeforeCallTool(func(ctx context.Context, id any, req *mcp.CallToolRequest) {
		d.mu.Lock()
		d.ids = append(d.ids, fmt.Sprintf("%T:%v", id, id))
		d.mu.Unlock()
	})
	s := askServer()
	server.WithHooks(hooks)(s)
	s.AddTool(mcp.NewTool("echo", mcp.WithString("text")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		res := mcp.NewToolResultText(req.GetString("text", ""))
		res.StructuredContent = map[string]any{"echo": req.GetString("text", ""), "n": 1}
		return res, nil
	})
	s.AddTool(mcp.NewTool("fail"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultError("it failed"), nil
	})
	s.AddTool(mcp.NewTool("boom"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return nil, fmt.Errorf("boom")
	})
	s.AddTool(mcp.NewTool("big", mcp.WithNumber("bytes")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText(strings.Repeat("x", req.GetInt("bytes", 0))), nil
	})
	s.AddTool(mcp.NewTool("block"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		d.started <- struct{}{}
		<-ctx.Done()
		d.ended <- struct{}{}
		return nil, ctx.Err()
	})
	h := server.NewStreamableHTTPServer(s)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.gone.Load() {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	d.url = hs.URL
	return d
}

func (d *httpDownstream) callIDs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.ids...)
}

// httpConfig is permissiveConfig with d as the server "asker", spoken to
// in 2025-11-25 (where the lane writes and reads tools/call itself).
func httpConfig(t *testing.T, d *httpDownstream, noFast bool) Config {
	cfg := permissiveConfig(t, "", "asker", nil)
	cfg.inProcess = nil
	cfg.Servers = []ServerConfig{{Name: "asker", Transport: "streamable-http", URL: d.url, ProtocolVersion: mcp.ProtocolVersion20251125}}
	cfg.noFastLane = noFast
	return cfg
}

// TestFastLaneRawDownstreamMatchesMCPGo: on a 2025-11-25 streamable HTTP
// connection the lane sends tools/call and relays the result bytes itself;
// the agent gets what mcp-go's client and server give it, byte for byte,
// for JSON answers, SSE answers, tool errors and JSON-RPC errors.
func TestFastLaneRawDownstreamMatchesMCPGo(t *testing.T) {
	fastDS, slowDS := startHTTPDownstream(t), startHTTPDownstream(t)
	fast, fastURL := runBroker(t, httpConfig(t, fastDS, false))
	_, slowURL := runBroker(t, httpConfig(t, slowDS, true))
	fastSID, slowSID := rawSession(t, fastURL), rawSession(t, slowURL)
	lh := map[string]string{mcp.HeaderProtocolVersion: mcp.ProtocolVersion20251125}
	callID := regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}`)

	for i, tc := range []struct{ name, params string }{
		{"json answer", `{"name":"asker__echo","arguments":{"text":"hé \u2028 \"q\""}}`},
		{"arguments with spaces", `{"name":"asker__echo","arguments": { "text" : "spaced" } }`},
		{"tool error", `{"name":"asker__fail","arguments":{}}`},
		{"handler error", `{"name":"asker__boom","arguments":{}}`},
		{"no arguments", `{"name":"asker__fail"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":%s}`, 100+i, tc.params)
			before := fast.fast.served.Load()
			fc, fb, fh := rawPost(t, context.Background(), fastURL, fastSID, lh, body)
			sc, sb, sh := rawPost(t, context.Background(), slowURL, slowSID, lh, body)
			fb, sb = callID.ReplaceAllString(fb, "CALL-ID"), callID.ReplaceAllString(sb, "CALL-ID")
			if fc != sc || fb != sb || fh.Get("Content-Type") != sh.Get("Content-Type") {
				t.Fatalf("lane answered %d %s %q\nmcp-go answered %d %s %q", fc, fh.Get("Content-Type"), fb, sc, sh.Get("Content-Type"), sb)
			}
			if fast.fast.served.Load() != before+1 {
				t.Fatalf("not served on the lane: %s", fb)
			}
		})
	}
	ids := fastDS.callIDs()
	if len(ids) != 5 {
		t.Fatalf("downstream saw %d calls: %v", len(ids), ids)
	}
	for _, id := range ids {
		if !strings.HasPrefix(id, "string:mcpbroker-") {
			t.Errorf("call id %s: not sent by the raw path", id)
		}
	}
	for _, id := range slowDS.callIDs() {
		if strings.HasPrefix(id, "string:") {
			t.Errorf("mcp-go's client sent id %s", id)
		}
	}
}

// TestFastLaneRawDownstreamStreams: the server's question on an SSE answer
// reaches the agent (the call is handed over to mcp-go on the way), and
// the agent's answer goes back to the server. (Notifications on the way:
// TestFastLaneRawHandoverSameAnswer, whose downstream sends them reliably:
// mcp-go's server drops the last notification a handler sends before
// returning unless it has an event store, notes/mcp-go.md pitfall 3; here
// 5-40 % of them under -race, with or without the broker in between.)
func TestFastLaneRawDownstreamStreams(t *testing.T) {
	ds := startHTTPDownstream(t)
	_, url := runBroker(t, httpConfig(t, ds, false))

	a := &answerer{}
	res := askVia(t, url, mcp.ProtocolVersion20251125, a, "what is the answer?")
	if res.IsError || !strings.Contains(text(res), "accept") || !strings.Contains(text(res), "42") || a.asked.Load() != 1 {
		t.Fatalf("ask: %q isError=%v asked=%d", text(res), res.IsError, a.asked.Load())
	}

	for _, id := range ds.callIDs() {
		if !strings.HasPrefix(id, "string:mcpbroker-") {
			t.Errorf("call id %s: not sent by the raw path", id)
		}
	}
}

// TestFastLaneRawDownstreamSessionLost: a 404 (the server lost the
// session) fails the call as unavailable, and the broker reconnects at
// once, even though mcp-go's client on that connection saw nothing wrong
// (here the server answers again right after).
func TestFastLaneRawDownstreamSessionLost(t *testing.T) {
	ds := startHTTPDownstream(t)
	_, url := runBroker(t, httpConfig(t, ds, false))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _ := answeringClient(t, ctx, url, mcp.ProtocolVersion20251125, &answerer{})
	call := func() (*mcp.CallToolResult, error) {
		req := mcp.CallToolRequest{}
		req.Params.Name = "asker__echo"
		req.Params.Arguments = map[string]any{"text": "hi"}
		return c.CallTool(ctx, req)
	}
	if res, err := call(); err != nil || res.IsError {
		t.Fatalf("first call: %v %+v", err, res)
	}
	ds.gone.Store(true)
	res, err := call()
	if err != nil || !res.IsError || !strings.Contains(text(res), string(ReasonToolUnavailable)) {
		t.Fatalf("call with the session lost: %v %+v", err, res)
	}
	ds.gone.Store(false)
	// Until the broker has reconnected the tool is unavailable, or not
	// listed at all (a JSON-RPC error).
	for {
		if res, err := call(); err == nil && !res.IsError {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the broker did not reconnect")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// handDownstream is a 2025-11-25 streamable HTTP server by hand whose
// tools (results' keys) answer tools/call with the given result on an SSE
// stream, after a notification when notify is set (which hands a lane
// call over to mcp-go on the way); a tool whose result is hangUp closes
// the connection instead of answering.
const hangUp = "hang up"

func handDownstream(t *testing.T, results map[string]string, notify *atomic.Bool) string {
	t.Helper()
	var names []string
	for name := range results {
		names = append(names, fmt.Sprintf(`{"name":%q,"inputSchema":{"type":"object"}}`, name))
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		var msg struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Name string `json:"name"`
			} `json:"params"`
		}
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &msg)
		reply := func(result string) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Mcp-Session-Id", "s1")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, msg.ID, result)
		}
		switch msg.Method {
		case "initialize":
			reply(`{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"hand","version":"1"}}`)
		case "tools/list":
			reply(`{"tools":[` + strings.Join(names, ",") + `]}`)
		case "tools/call":
			if results[msg.Params.Name] == hangUp {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close() // the server died mid-call
				}
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			if notify.Load() {
				fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"x\"}}\n\n")
			}
			fmt.Fprintf(w, "data: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":%s}\n\n", msg.ID, results[msg.Params.Name])
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	t.Cleanup(hs.Close)
	return hs.URL
}

// laneAnswer calls tool on the broker at url in session sid and returns
// the result object the agent got (call IDs replaced by CALL-ID), checking
// that a notification came first exactly when notified.
func laneAnswer(t *testing.T, url, sid, tool string, notified bool) string {
	t.Helper()
	lh := map[string]string{mcp.HeaderProtocolVersion: mcp.ProtocolVersion20251125}
	_, b, _ := rawPost(t, context.Background(), url, sid, lh, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"asker__`+tool+`","arguments":{}}}`)
	if notified != strings.Contains(b, `"method":"notifications/message"`) {
		t.Errorf("notification relayed %v, want %v: %q", !notified, notified, b)
	}
	m := regexp.MustCompile(`"result":(\{.*\})\}`).FindStringSubmatch(b)
	if m == nil {
		t.Fatalf("no result in %q", b)
	}
	return regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}`).ReplaceAllString(m[1], "CALL-ID")
}

// TestFastLaneRawHandoverSameAnswer: a downstream result reaches the agent
// the same whether the call stayed on the lane (bytes relayed) or was
// handed over to mcp-go by a notification on the way (the result typed
// again); a result mcp-go's client refuses (no content) is the same
// downstream-error refusal either way.
func TestFastLaneRawHandoverSameAnswer(t *testing.T) {
	var notify atomic.Bool
	ds := handDownstream(t, map[string]string{"t": `{"isError":false}`, "ok": `{"content":[{"type":"text","text":"fine","extra":1}]}`}, &notify)
	_, url := runBroker(t, httpConfig(t, &httpDownstream{url: ds}, false))
	sid := rawSession(t, url)
	for _, tool := range []string{"t", "ok"} {
		notify.Store(false)
		lane := laneAnswer(t, url, sid, tool, false)
		notify.Store(true)
		handed := laneAnswer(t, url, sid, tool, true)
		if tool == "t" && (lane != handed || !strings.Contains(lane, string(ReasonDownstreamError))) {
			t.Errorf("%s: lane %s, handed over %s", tool, lane, handed)
		}
		if tool == "ok" && (lane != `{"content":[{"type":"text","text":"fine","extra":1}]}` || !strings.Contains(handed, `"text":"fine"`)) {
			t.Errorf("%s: lane %s, handed over %s", tool, lane, handed)
		}
	}
}

// TestFastLaneRawRecordedAsSeen: the call.completed status agrees with
// what the agent gets, on the lane and handed over, for results that try
// to make them differ: content mcp-go cannot decode (a downstream error,
// as through mcp-go), and isError spelled twice (encoding/json folds case,
// the agent's parser does not: the result is re-encoded).
func TestFastLaneRawRecordedAsSeen(t *testing.T) {
	var notify atomic.Bool
	ds := handDownstream(t, map[string]string{
		"undecodable": `{"content":[{"type":"text","text":5}]}`,
		"twice":       `{"content":[{"type":"text","text":"denied"}],"isError":true,"ISERROR":false}`,
		"twice2":      `{"content":[{"type":"text","text":"fine"}],"ISERROR":true,"isError":false}`,
	}, &notify)
	b, url := runBroker(t, httpConfig(t, &httpDownstream{url: ds}, false))
	sid := rawSession(t, url)
	for _, tool := range []string{"undecodable", "twice", "twice2"} {
		for _, n := range []bool{false, true} {
			notify.Store(n)
			got := laneAnswer(t, url, sid, tool, n)
			var agent struct {
				IsError bool `json:"isError"`
			}
			var top map[string]json.RawMessage
			if err := json.Unmarshal([]byte(got), &top); err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal(top["isError"], &agent.IsError) // the exact key, as an agent reads it
			entries, err := b.ledger.List(context.Background(), audit.Filter{Type: audit.CallCompleted})
			if err != nil || len(entries) == 0 {
				t.Fatalf("ledger: %v %d", err, len(entries))
			}
			status := entries[len(entries)-1].Event.Status
			want := audit.StatusOK
			if agent.IsError {
				want = audit.StatusToolError
			}
			if tool == "undecodable" {
				want = audit.StatusError
				if !strings.Contains(got, string(ReasonDownstreamError)) {
					t.Errorf("%s handed over %v: agent got %s", tool, n, got)
				}
			}
			if status != want {
				t.Errorf("%s handed over %v: recorded %s, agent got %s", tool, n, status, got)
			}
		}
	}
}

// TestFastLaneRawCancelled: an agent that goes away mid-call (over HTTP a
// client cancels by closing its request) ends the raw downstream request:
// the downstream's handler sees its context end, and the outcome is
// recorded as cancelled.
func TestFastLaneRawCancelled(t *testing.T) {
	ds := startHTTPDownstream(t)
	b, url := runBroker(t, httpConfig(t, ds, false))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _ := answeringClient(t, ctx, url, mcp.ProtocolVersion20251125, &answerer{})
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name = "asker__block"
		_, err := c.CallTool(cctx, req)
		done <- err
	}()
	select {
	case <-ds.started:
	case <-ctx.Done():
		t.Fatal("the call never reached the downstream")
	}
	ccancel()
	if err := <-done; err == nil {
		t.Fatal("the cancelled call returned no error")
	}
	select {
	case <-ds.ended:
	case <-ctx.Done():
		t.Fatal("the downstream's handler never saw the call end")
	}
	for {
		entries, err := b.ledger.List(context.Background(), audit.Filter{Type: audit.CallCompleted})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(entries); n > 0 && entries[n-1].Event.Target == "asker__block" {
			if st := entries[n-1].Event.Status; st != audit.StatusCancelled {
				t.Fatalf("outcome %q, want %s", st, audit.StatusCancelled)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no outcome recorded")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if ids := ds.callIDs(); len(ids) != 1 || !strings.HasPrefix(ids[0], "string:mcpbroker-") {
		t.Fatalf("calls seen downstream %v: not one raw call", ids)
	}
}

// TestFastLaneRawDownstreamHangsUp: a downstream that drops the connection
// mid-call fails that call as unavailable, recorded as an error, and the
// next call goes through.
func TestFastLaneRawDownstreamHangsUp(t *testing.T) {
	var notify atomic.Bool
	ds := handDownstream(t, map[string]string{"dies": hangUp, "ok": `{"content":[{"type":"text","text":"fine"}]}`}, &notify)
	b, url := runBroker(t, httpConfig(t, &httpDownstream{url: ds}, false))
	sid := rawSession(t, url)
	if got := laneAnswer(t, url, sid, "dies", false); !strings.Contains(got, string(ReasonToolUnavailable)) {
		t.Fatalf("agent got %s", got)
	}
	entries, err := b.ledger.List(context.Background(), audit.Filter{Type: audit.CallCompleted})
	if err != nil || len(entries) != 1 || entries[0].Event.Status != audit.StatusError {
		t.Fatalf("outcome: %v %+v", err, entries)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := laneAnswer(t, url, sid, "ok", false); got == `{"content":[{"type":"text","text":"fine"}]}` {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("after the hang-up the agent gets %s", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDownstreamAnswerTooLarge: an answer over max_answer_bytes fails the
// call as a downstream error, recorded as an error, on the lane (the raw
// path) and through mcp-go's client alike; the connection stays, and an
// answer within the limit goes through.
func TestDownstreamAnswerTooLarge(t *testing.T) {
	for _, noFast := range []bool{false, true} {
		ds := startHTTPDownstream(t)
		cfg := httpConfig(t, ds, noFast)
		cfg.MaxAnswerBytes = 64 << 10
		b, url := runBroker(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, _ := answeringClient(t, ctx, url, mcp.ProtocolVersion20251125, &answerer{})
		call := func(n int) *mcp.CallToolResult {
			t.Helper()
			req := mcp.CallToolRequest{}
			req.Params.Name = "asker__big"
			req.Params.Arguments = map[string]any{"bytes": n}
			res, err := c.CallTool(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		if res := call(100 << 10); !res.IsError || !strings.Contains(text(res), string(ReasonDownstreamError)) {
			t.Errorf("noFast=%v: a 100 KiB answer: %.200s", noFast, text(res))
		}
		if res := call(10 << 10); res.IsError || len(text(res)) != 10<<10 {
			t.Errorf("noFast=%v: a 10 KiB answer after it: isError %v, %d bytes", noFast, res.IsError, len(text(res)))
		}
		entries, err := b.ledger.List(context.Background(), audit.Filter{Type: audit.CallCompleted})
		if err != nil || len(entries) != 2 || entries[0].Event.Status != audit.StatusError || entries[1].Event.Status != audit.StatusOK {
			t.Errorf("noFast=%v: outcomes %v %+v", noFast, err, entries)
		}
		cancel()
	}
}
