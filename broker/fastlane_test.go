package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/broker/audit"
)

// TestFastLane drives the fast lane from a real 2025-11-25 client over
// HTTP: a plain call is served by the lane, a call whose downstream asks
// the agent a question is handed to mcp-go mid-call and still relayed, a
// cancelled call is cancelled downstream, a call with a progress token
// goes through mcp-go, and every call has both its records.
func TestFastLane(t *testing.T) {
	ds := askServer()
	ds.AddTool(mcp.NewTool("echo", mcp.WithString("text")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText(req.GetString("text", "")), nil
	})
	hung, hanging := make(chan error, 1), make(chan struct{}, 1)
	ds.AddTool(mcp.NewTool("hang"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		hanging <- struct{}{}
		<-ctx.Done()
		hung <- ctx.Err()
		return nil, ctx.Err()
	})
	b, url := runBroker(t, permissiveConfig(t, "", "asker", ds))

	a := &answerer{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, tr := answeringClient(t, ctx, url, mcp.ProtocolVersion20251125, a)
	call := func(ctx context.Context, name string, args map[string]any, meta *mcp.Meta) (*mcp.CallToolResult, error) {
		req := mcp.CallToolRequest{}
		req.Params.Name, req.Params.Arguments, req.Params.Meta = name, args, meta
		return c.CallTool(ctx, req)
	}

	res, err := call(ctx, "asker__echo", map[string]any{"text": "fast"}, nil)
	if err != nil || res.IsError || text(res) != "fast" {
		t.Fatalf("echo: %v %q", err, text(res))
	}
	if b.fast.served.Load() != 1 || b.fast.handedOver.Load() != 0 {
		t.Fatalf("served %d handed over %d, want 1 0", b.fast.served.Load(), b.fast.handedOver.Load())
	}

	res, err = call(ctx, "asker__ask", map[string]any{"q": "what is the answer?"}, nil)
	if err != nil || res.IsError || !strings.Contains(text(res), "42") || a.asked.Load() != 1 {
		t.Fatalf("ask: %v %q asked %d", err, text(res), a.asked.Load())
	}
	if b.fast.served.Load() != 2 || b.fast.handedOver.Load() != 1 {
		t.Fatalf("served %d handed over %d, want 2 1", b.fast.served.Load(), b.fast.handedOver.Load())
	}

	hctx, hcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := call(hctx, "asker__hang", nil, nil); done <- err }()
	select { // the call is at the downstream
	case <-hanging:
	case <-time.After(10 * time.Second):
		t.Fatal("hang not called")
	}
	hcancel()
	select {
	case err := <-hung:
		if err == nil {
			t.Fatal("downstream context not cancelled")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancellation did not reach the downstream")
	}
	<-done

	// notifications/cancelled with the session cancels a lane call whose
	// HTTP request is still open.
	lh := map[string]string{mcp.HeaderProtocolVersion: mcp.ProtocolVersion20251125}
	raw := make(chan string, 1)
	go func() {
		_, out, _ := rawPost(t, ctx, url, tr.GetSessionId(), lh, `{"jsonrpc":"2.0","id":"h-1","method":"tools/call","params":{"name":"asker__hang"}}`)
		raw <- out
	}()
	select { // the call is at the downstream
	case <-hanging:
	case <-time.After(10 * time.Second):
		t.Fatal("hang not called")
	}
	rawPost(t, ctx, url, tr.GetSessionId(), lh, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"h-1","reason":"test"}}`)
	select {
	case <-hung:
	case <-time.After(5 * time.Second):
		t.Fatal("notifications/cancelled did not reach the lane's call")
	}
	if out := <-raw; !strings.Contains(out, string(ReasonCancelled)) || !strings.Contains(out, `"id":"h-1"`) {
		t.Fatalf("cancelled call answered %s", out)
	}

	served := b.fast.served.Load()
	res, err = call(ctx, "asker__echo", map[string]any{"text": "slow"}, &mcp.Meta{ProgressToken: "p1"})
	if err != nil || res.IsError || text(res) != "slow" {
		t.Fatalf("echo with progress token: %v %q", err, text(res))
	}
	if b.fast.served.Load() != served {
		t.Fatal("a call with a progress token was taken by the lane")
	}

	resp, err := http.Get(strings.TrimSuffix(url, "/mcp") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	prom, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf("mcpbroker_fastlane_calls_total %d", b.fast.served.Load()),
		"mcpbroker_fastlane_handovers_total 1",
		"mcpbroker_store_checkpoints_total ",
		"mcpbroker_store_checkpoint_failures_total 0",
		"mcpbroker_store_wal_bytes ",
	} {
		if !strings.Contains(string(prom), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	entries, err := b.ledger.List(context.Background(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	decided, completed := map[string]int{}, map[string]string{}
	for _, e := range entries {
		ev := e.Event
		if ev.Method != "tools/call" || ev.Target == "" {
			continue
		}
		if ev.Session == "" {
			t.Errorf("%s record of %s without session", ev.Type, ev.Target)
		}
		switch ev.Type {
		case audit.CallDecided:
			decided[ev.Target]++
		case audit.CallCompleted:
			completed[ev.Target] += ev.Status + " "
		}
	}
	if decided["asker__echo"] != 2 || decided["asker__ask"] < 1 || decided["asker__hang"] != 2 {
		t.Errorf("decided records %v", decided)
	}
	if completed["asker__echo"] != "ok ok " || completed["asker__ask"] != "ok " || completed["asker__hang"] != "cancelled cancelled " {
		t.Errorf("completed records %v", completed)
	}
}

func TestFastLaneKeepsSessionsFresh(t *testing.T) {
	f := newFastLane(4*time.Minute, time.Minute)
	if f.fresh("s") {
		t.Fatal("unknown session fresh")
	}
	f.touched("s")
	if !f.fresh("s") {
		t.Fatal("touched session not fresh")
	}
	f.lastSlow.Load("s")
	v, _ := f.lastSlow.Load("s")
	v.(interface{ Store(int64) }).Store(time.Now().Add(-2 * time.Minute).UnixNano())
	if f.fresh("s") {
		t.Fatal("session last seen by mcp-go half a TTL ago still fresh")
	}
	f.forget("s")
	if _, ok := f.lastSlow.Load("s"); ok {
		t.Fatal("forgotten")
	}
	for id, want := range map[string]string{`1`: "s\x00n1", `"1"`: "s\x00s1", ` 7 `: "s\x00n7"} {
		if got, ok := inflightKey("s", []byte(id)); !ok || got != want {
			t.Errorf("inflightKey(%s) = %q %v", id, got, ok)
		}
	}
	for _, id := range []string{``, `null`, `{}`, `[1]`} {
		if _, ok := inflightKey("s", []byte(id)); ok {
			t.Errorf("inflightKey(%s) accepted", id)
		}
	}
}

func TestCallIDsUniqueAndOrdered(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for range 5000 {
		id := newCallID()
		u, err := uuid.Parse(id)
		if err != nil || u.Version() != 7 {
			t.Fatalf("call ID %q: %v version %d", id, err, u.Version())
		}
		if seen[id] {
			t.Fatalf("duplicate call ID %s", id)
		}
		seen[id] = true
		if id[:13] < prev[:min(13, len(prev))] { // the millisecond timestamp never goes back
			t.Fatalf("call ID %s before %s", id, prev)
		}
		prev = id
	}
}

// TestFastLaneMatchesMCPGo: for the requests the lane takes, a broker with
// the lane answers byte for byte what a broker without it (every request
// through mcp-go) answers, in both eras; what it does not take (a header
// mcp-go refuses) is answered by mcp-go itself.
func TestFastLaneMatchesMCPGo(t *testing.T) {
	start := func(noFast bool) (*Broker, string) {
		ds := askServer()
		ds.AddTool(mcp.NewTool("echo", mcp.WithString("text")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			res := mcp.NewToolResultText(req.GetString("text", ""))
			res.StructuredContent = map[string]any{"echo": req.GetString("text", ""), "n": 1}
			return res, nil
		})
		// A tool whose argument is mirrored in an Mcp-Param-Region header
		// (2026-07-28): the lane checks the header as mcp-go does.
		ds.AddTool(mcp.NewToolWithRawSchema("region", "echoes its region", json.RawMessage(
			`{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"}}}`)),
			func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				return mcp.NewToolResultText(req.GetString("region", "")), nil
			})
		// One whose schema mcp-go cannot read for bindings ("odd": true):
		// it binds no header, for the lane as for mcp-go.
		ds.AddTool(mcp.NewToolWithRawSchema("odd", "an unreadable binding", json.RawMessage(
			`{"type":"object","properties":{"odd":true,"region":{"type":"string","x-mcp-header":"Region"}}}`)),
			func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				return mcp.NewToolResultText(req.GetString("region", "")), nil
			})
		cfg := permissiveConfig(t,
			`@id("no-secret") forbid (principal, action, resource) when { resource.name == "asker__echo" && context.args has text && context.args.text == "secret" };`,
			"asker", ds)
		cfg.noFastLane = noFast
		return runBroker(t, cfg)
	}
	fast, fastURL := start(false)
	_, slowURL := start(true)

	post := func(url, sid string, hdr map[string]string, body string) (int, string, http.Header) {
		t.Helper()
		return rawPost(t, context.Background(), url, sid, hdr, body)
	}
	legacy := func(url string) string { return rawSession(t, url) }
	fastSID, slowSID := legacy(fastURL), legacy(slowURL)
	lh := map[string]string{mcp.HeaderProtocolVersion: "2025-11-25"}
	mh := map[string]string{mcp.HeaderProtocolVersion: "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "asker__echo"}
	modernMeta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`

	type laneCase struct {
		name    string
		modern  bool
		hdr     map[string]string
		body    string
		viaLane bool // the lane serves it (else mcp-go answers)
	}
	cases := []laneCase{
		{"legacy call", false, lh, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"}}}`, true},
		{"legacy string id", false, lh, `{"jsonrpc":"2.0","id":"x-1","method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hé \u2028"}}}`, true},
		{"legacy unknown tool", false, lh, `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"asker__nope","arguments":{}}}`, false},
		{"legacy denied", false, lh, `{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"secret"}}}`, true},
		{"modern denied", true, mh, `{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"secret"},` + modernMeta + `}}`, true},
		{"legacy, escaped 2026-07-28 _meta key", false, lh, `{"jsonrpc":"2.0","id":14,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol\/protocolVersion":"2026-07-28"}}}`, false},
		{"modern, escaped _meta key", true, mh, `{"jsonrpc":"2.0","id":15,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol\/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`, false},
		{"legacy id 1e999", false, lh, `{"jsonrpc":"2.0","id":1e999,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"}}}`, false},
		{"legacy id beyond float64", false, lh, `{"jsonrpc":"2.0","id":123456789012345678901,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"}}}`, false},
		{"legacy negative id", false, lh, `{"jsonrpc":"2.0","id":-3,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"}}}`, true},
		{"legacy log level in _meta", false, lh, `{"jsonrpc":"2.0","id":16,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/logLevel":"debug"}}}`, false},
		{"modern call", true, mh, `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"},` + modernMeta + `}}`, true},
		{"modern header mismatch", true, map[string]string{mcp.HeaderProtocolVersion: "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "asker__other"},
			`{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"},` + modernMeta + `}}`, false},
		{"modern without capabilities", true, mh, `{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, false},
	}
	withHdr := func(h map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for hk, hv := range h {
			out[hk] = hv
		}
		return out
	}
	rh := map[string]string{mcp.HeaderProtocolVersion: "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "asker__region"}
	regionCall := func(id int) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"asker__region","arguments":{"region":"eu"},%s}}`, id, modernMeta)
	}
	cases = append(cases,
		laneCase{"legacy, rebound Host", false, withHdr(lh, "Host", "rebound.attacker.example"), `{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"}}}`, false},
		laneCase{"modern, rebound Host", true, withHdr(mh, "Host", "rebound.attacker.example:80"), `{"jsonrpc":"2.0","id":18,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"},` + modernMeta + `}}`, false},
		laneCase{"modern, mirrored header matches", true, withHdr(rh, "Mcp-Param-Region", "eu"), regionCall(20), true},
		laneCase{"modern, mirrored header missing", true, rh, regionCall(21), false},
		laneCase{"modern, mirrored header differs", true, withHdr(rh, "Mcp-Param-Region", "us"), regionCall(22), false},
		laneCase{"modern, stray Mcp-Param header on a tool that binds none", true, withHdr(mh, "Mcp-Param-Region", "us"),
			`{"jsonrpc":"2.0","id":23,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"},` + modernMeta + `}}`, true},
		laneCase{"modern, unreadable binding", true, withHdr(map[string]string{mcp.HeaderProtocolVersion: "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "asker__odd"}, "Mcp-Param-Region", "us"),
			`{"jsonrpc":"2.0","id":24,"method":"tools/call","params":{"name":"asker__odd","arguments":{"region":"eu"},` + modernMeta + `}}`, true},
		laneCase{"legacy, Content-Type with a bad parameter", false, withHdr(lh, "Content-Type", "application/json; charset"), `{"jsonrpc":"2.0","id":19,"method":"tools/call","params":{"name":"asker__echo","arguments":{"text":"hi"}}}`, false},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := fast.fast.served.Load()
			fs, ss := fastSID, slowSID
			if tc.modern {
				fs, ss = "", ""
			}
			fc, fb, fh := post(fastURL, fs, tc.hdr, tc.body)
			sc, sb, sh := post(slowURL, ss, tc.hdr, tc.body)
			callID := regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}`)
			fb, sb = callID.ReplaceAllString(fb, "CALL-ID"), callID.ReplaceAllString(sb, "CALL-ID")
			if fc != sc || fb != sb || fh.Get("Content-Type") != sh.Get("Content-Type") {
				t.Fatalf("lane answered %d %s %q\nmcp-go answered %d %s %q", fc, fh.Get("Content-Type"), fb, sc, sh.Get("Content-Type"), sb)
			}
			if got := fast.fast.served.Load() - before; got != map[bool]int64{true: 1, false: 0}[tc.viaLane] {
				t.Fatalf("lane served %d, want via lane %v (answer %s)", got, tc.viaLane, fb)
			}
		})
	}
}

// TestFastLaneHandoverRefused: when mcp-go refuses a handed-over request
// (here the session ended while the call ran, then the downstream asked
// the agent a question, which needs the session), the relay fails and the
// call's result, which already happened downstream, is still the answer,
// and is recorded as such.
func TestFastLaneHandoverRefused(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	ds := server.NewMCPServer("slow", "1", server.WithLogging())
	ds.AddTool(mcp.NewTool("work"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		close(entered)
		<-release
		// A question for the agent: the downstream waits for the relay,
		// so the hand-over happens before the result, every time.
		_, err := server.ServerFromContext(ctx).RequestElicitation(ctx, mcp.ElicitationRequest{Params: mcp.ElicitationParams{
			Message: "go on?", RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{}}}})
		if err == nil {
			return mcp.NewToolResultError("the elicitation reached an ended session"), nil
		}
		return mcp.NewToolResultText("side effect done"), nil
	})
	b, url := runBroker(t, permissiveConfig(t, "", "slow", ds))

	lh := map[string]string{mcp.HeaderProtocolVersion: mcp.ProtocolVersion20251125}
	sid := rawSession(t, url)

	type answer struct {
		code int
		body string
	}
	got := make(chan answer, 1)
	go func() {
		c, out, _ := rawPost(t, context.Background(), url, sid, lh, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow__work"}}`)
		got <- answer{c, out}
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("downstream tool not called")
	}
	if _, err := b.sessions.Terminate(sid); err != nil {
		t.Fatal(err)
	}
	close(release)
	a := <-got
	if a.code != http.StatusOK || !strings.Contains(a.body, "side effect done") || !strings.Contains(a.body, `"id":1`) {
		t.Fatalf("answer %d %s", a.code, a.body)
	}
	if b.fast.handedOver.Load() != 1 {
		t.Fatalf("handed over %d times, want 1", b.fast.handedOver.Load())
	}
	entries, err := b.ledger.List(context.Background(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Event.Type == audit.CallCompleted && e.Event.Target == "slow__work" {
			if e.Event.Status != audit.StatusOK {
				t.Fatalf("completed %s", e.Event.Status)
			}
			return
		}
	}
	t.Fatal("no call.completed record")
}

// rawPost posts body to url as a streamable-HTTP MCP client would (JSON,
// both Accept types), in session sid if not empty, with hdr's headers
// ("Host" sets the request's Host). It may run off the test goroutine:
// failures are reported with t.Error and a zero answer.
func rawPost(t *testing.T, ctx context.Context, url, sid string, hdr map[string]string, body string) (int, string, http.Header) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, "", nil
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid != "" {
		req.Header.Set(server.HeaderKeySessionID, sid)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, "", nil
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out), resp.Header
}

// rawSession opens a 2025-11-25 session on url (initialize, initialized)
// with raw requests and returns its ID.
func rawSession(t *testing.T, url string) string {
	t.Helper()
	_, _, h := rawPost(t, context.Background(), url, "", nil,
		`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	sid := h.Get(server.HeaderKeySessionID)
	if sid == "" {
		t.Fatal("initialize returned no session")
	}
	rawPost(t, context.Background(), url, sid, map[string]string{mcp.HeaderProtocolVersion: mcp.ProtocolVersion20251125},
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return sid
}

// stallingAnswerer never answers: it reports the question and waits for
// the request to end.
type stallingAnswerer struct{ asked chan struct{} }

func (s stallingAnswerer) Elicit(ctx context.Context, _ mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	close(s.asked)
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestFastLaneAdoptedCallCancelled: an agent that cancels a call handed
// over to mcp-go (here while its question is open) cancels the pipeline:
// its outcome is recorded (cancelled, or the tool error the downstream
// answered once the question failed: they race), and no refusal is
// recorded for the request.
func TestFastLaneAdoptedCallCancelled(t *testing.T) {
	b, url := runBroker(t, permissiveConfig(t, "", "asker", askServer()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := stallingAnswerer{asked: make(chan struct{})}
	c, _ := answeringClient(t, ctx, url, mcp.ProtocolVersion20251125, s)
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		req := mcp.CallToolRequest{}
		req.Params.Name, req.Params.Arguments = "asker__ask", map[string]any{"q": "wait?"}
		_, err := c.CallTool(cctx, req)
		done <- err
	}()
	select {
	case <-s.asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the question never reached the agent")
	}
	if b.fast.handedOver.Load() != 1 {
		t.Fatalf("handed over %d times, want 1", b.fast.handedOver.Load())
	}
	ccancel()
	<-done
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		entries, err := b.ledger.List(context.Background(), audit.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		status := ""
		for _, e := range entries {
			if e.Event.Type == audit.RequestRejected && e.Event.Method == "tools/call" {
				t.Fatalf("refusal recorded for a cancelled call: %+v", e.Event)
			}
			if e.Event.Type == audit.CallCompleted && e.Event.Target == "asker__ask" {
				status = e.Event.Status
			}
		}
		if status == audit.StatusCancelled || status == audit.StatusToolError {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outcome %q, want %s or %s", status, audit.StatusCancelled, audit.StatusToolError)
		}
	}
}
