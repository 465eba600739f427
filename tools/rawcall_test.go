package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

type rootsCaller struct {
	mu    sync.Mutex
	notes []string
}

func (c *rootsCaller) Elicit(context.Context, mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	return nil, fmt.Errorf("not asked")
}

func (c *rootsCaller) CreateMessage(context.Context, mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	return nil, fmt.Errorf("not asked")
}

func (c *rootsCaller) ListRoots(context.Context, mcp.ListRootsRequest) (*mcp.ListRootsResult, error) {
	return &mcp.ListRootsResult{Roots: []mcp.Root{{URI: "file:///work", Name: "work"}}}, nil
}

func (c *rootsCaller) Notify(method string, params map[string]any) {
	c.mu.Lock()
	c.notes = append(c.notes, fmt.Sprint(method, " ", params["data"]))
	c.mu.Unlock()
}

// TestCallToolJSONOverSSE: the raw path answers the server's request on
// the call's stream with the call's Caller, relays its notification,
// resumes the stream the server ended, and returns the result's bytes as
// sent (fields mcp-go's types do not know included), with the session,
// protocol and configured headers on every request.
func TestCallToolJSONOverSSE(t *testing.T) {
	var mu sync.Mutex
	var callID json.RawMessage
	var rootsAnswer string
	var headers []http.Header // of the call and the resume
	roots := make(chan struct{}, 1)
	s := &handServer{headers: map[string]string{"X-Team": "blue"}}
	s.call = func(w http.ResponseWriter, id json.RawMessage, r *http.Request) {
		mu.Lock()
		callID, headers = id, append(headers, r.Header.Clone())
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"roots/list\"}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-roots:
		case <-time.After(10 * time.Second):
			t.Error("no answer to roots/list")
		}
		fmt.Fprint(w, "id: e1\nretry: 10\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"half way\"}}\n\n")
	}
	s.answer = func(id json.RawMessage, body []byte) {
		if string(id) == "7" {
			mu.Lock()
			rootsAnswer = string(body)
			mu.Unlock()
			roots <- struct{}{}
		}
	}
	s.get = func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Last-Event-ID") != "e1" {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		mu.Lock()
		headers = append(headers, r.Header.Clone())
		id := callID
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "id: e2\ndata: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"resumed\"}],\"extra\":{\"kept\":true}}}\n\n", id)
	}
	p := startHand(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	caller := &rootsCaller{}
	res, err := p.CallToolJSON(WithCaller(ctx, caller), handTool(t, p, "t"), []byte(`{"a":1}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"content":[{"type":"text","text":"resumed"}],"extra":{"kept":true}}`; string(res.JSON) != want || res.IsError {
		t.Fatalf("result %s isError=%v, want %s", res.JSON, res.IsError, want)
	}
	caller.mu.Lock()
	notes := strings.Join(caller.notes, "; ")
	caller.mu.Unlock()
	if notes != "notifications/message half way" {
		t.Fatalf("notifications relayed: %q", notes)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.HasPrefix(string(callID), `"mcpbroker-`) {
		t.Fatalf("call id %s: not the raw path", callID)
	}
	if !strings.Contains(rootsAnswer, `"uri":"file:///work"`) {
		t.Fatalf("answer to roots/list: %s", rootsAnswer)
	}
	if len(headers) != 2 {
		t.Fatalf("%d requests for the call, want the call and one resume", len(headers))
	}
	for _, h := range headers {
		if h.Get("Mcp-Session-Id") != "s1" || h.Get("Mcp-Protocol-Version") != mcp.ProtocolVersion20251125 || h.Get("X-Team") != "blue" {
			t.Fatalf("headers %v", h)
		}
	}
}

// handServer is a 2025-11-25 streamable HTTP server by hand, for what
// mcp-go's server does not do: call answers tools/call, get a GET, answer
// sees responses the client posts; tools are its tools ("t" if none);
// sessionless leaves out Mcp-Session-Id; ping404 answers ping 404 (the
// session lost); headers are the spec's extra headers.
type handServer struct {
	call        func(w http.ResponseWriter, id json.RawMessage, r *http.Request)
	get         func(w http.ResponseWriter, r *http.Request)
	answer      func(id json.RawMessage, body []byte)
	tools       []string
	sessionless bool
	headers     map[string]string

	mu       sync.Mutex
	ping404  bool
	inits    int
	callHdrs []http.Header
}

func (s *handServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		if s.get == nil {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		s.get(w, r)
		return
	}
	if r.Method != http.MethodPost {
		return
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	body, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(body, &msg)
	reply := func(result string) {
		w.Header().Set("Content-Type", "application/json")
		if !s.sessionless {
			w.Header().Set("Mcp-Session-Id", "s1")
		}
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, msg.ID, result)
	}
	switch msg.Method {
	case "initialize":
		s.mu.Lock()
		s.inits++
		s.mu.Unlock()
		reply(`{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"hand","version":"1"}}`)
	case "tools/list":
		names := s.tools
		if len(names) == 0 {
			names = []string{"t"}
		}
		var list []string
		for _, name := range names {
			list = append(list, fmt.Sprintf(`{"name":%q,"inputSchema":{"type":"object"}}`, name))
		}
		reply(`{"tools":[` + strings.Join(list, ",") + `]}`)
	case "tools/call":
		s.mu.Lock()
		s.callHdrs = append(s.callHdrs, r.Header.Clone())
		s.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		s.call(w, msg.ID, r)
	case "ping":
		s.mu.Lock()
		p := s.ping404
		s.mu.Unlock()
		if p {
			http.NotFound(w, r)
			return
		}
		reply(`{}`)
	case "": // a response to the server's request
		if s.answer != nil {
			s.answer(msg.ID, body)
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		w.WriteHeader(http.StatusAccepted)
	}
}

// startHand serves s on 127.0.0.1 and returns a started pool connected to
// it (server "hand", prefix "h__").
func startHand(t *testing.T, s *handServer) *Pool {
	t.Helper()
	return servePool(t, s, Spec{Name: "hand", Prefix: "h__", ProtocolVersion: mcp.ProtocolVersion20251125, Headers: s.headers}, testOut(t))
}

func handTool(t *testing.T, p *Pool, name string) *Tool {
	t.Helper()
	tool, ok := p.Snapshot().Tool("h__" + name)
	if !ok {
		t.Fatalf("tool %s missing", name)
	}
	return tool
}

// TestRawCallResumesAgain: a resumed stream the server ends again without
// the response is resumed again from the same event (mcp-go does).
func TestRawCallResumesAgain(t *testing.T) {
	var mu sync.Mutex
	var callID json.RawMessage
	gets := 0
	s := &handServer{}
	s.call = func(w http.ResponseWriter, id json.RawMessage, _ *http.Request) {
		mu.Lock()
		callID, gets = id, 0
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: e1\nretry: 10\n\n")
	}
	s.get = func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Last-Event-ID") != "e1" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		gets++
		n, id := gets, callID
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		if n == 1 {
			fmt.Fprint(w, ": still working\n\n")
			return
		}
		fmt.Fprintf(w, "id: e2\ndata: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"content\":[]}}\n\n", id)
	}
	p := startHand(t, s)
	tool := handTool(t, p, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.CallTool(ctx, tool, []byte(`{}`), nil); err != nil {
		t.Fatalf("mcp-go: %v", err)
	}
	res, err := p.CallToolJSON(ctx, tool, []byte(`{}`), nil)
	if err != nil || string(res.JSON) != `{"content":[]}` {
		t.Fatalf("raw path: %s %v", res.JSON, err)
	}
}

// TestRawCallResultsAsMCPGo: a result mcp-go's client refuses is refused,
// one it changes is changed the same way (whatever the spelling of the
// keys), and one it takes is relayed as sent, fields mcp-go's types do not
// know included.
func TestRawCallResultsAsMCPGo(t *testing.T) {
	var mu sync.Mutex
	result := ""
	s := &handServer{}
	s.call = func(w http.ResponseWriter, id json.RawMessage, _ *http.Request) {
		mu.Lock()
		r := result
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, id, r)
	}
	p := startHand(t, s)
	tool := handTool(t, p, "t")
	ctx := context.Background()
	for _, tc := range []struct{ result, relayed string }{
		{`{"isError":false}`, ""},
		{`{"content":[{"type":"nope"}]}`, ""},
		{`{"content":[],"RESULTTYPE":"input_required"}`, ""},
		{`{"content":[],"result\u0054ype":"input_required"}`, ""},
		{`{"content":[],"_meta":{"io.modelcontextprotocol\/serverInfo":{"name":"downstream"},"trace":"t1"}}`, ""},
		{`{"content":[{"type":"text","text":"a","future":1}],"isError":true,"later":{"x":[1]}}`, `{"content":[{"type":"text","text":"a","future":1}],"isError":true,"later":{"x":[1]}}`},
	} {
		mu.Lock()
		result = tc.result
		mu.Unlock()
		typed, terr := p.CallTool(ctx, tool, []byte(`{}`), nil)
		raw, rerr := p.CallToolJSON(ctx, tool, []byte(`{}`), nil)
		if (terr == nil) != (rerr == nil) {
			t.Errorf("%s: mcp-go err %v, raw err %v", tc.result, terr, rerr)
			continue
		}
		if terr != nil {
			continue
		}
		want := tc.relayed
		if want == "" {
			b, _ := json.Marshal(typed)
			want = string(b)
		}
		if string(raw.JSON) != want || raw.IsError != typed.IsError {
			t.Errorf("%s: raw path gives %s (isError %v), want %s", tc.result, raw.JSON, raw.IsError, want)
		}
	}
}

// TestRawCallAfterSessionEnded: once the session has ended (a 404 to
// mcp-go's client, or to the raw path), no tools/call goes out on it, and
// the call fails as unavailable (the supervisor reconnects).
func TestRawCallAfterSessionEnded(t *testing.T) {
	s := &handServer{}
	s.call = func(w http.ResponseWriter, id json.RawMessage, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"content":[]}}`, id)
	}
	p := startHand(t, s)
	tool := handTool(t, p, "t")
	ctx := context.Background()
	c, err := p.ds["hand"].current()
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.ping404 = true
	s.mu.Unlock()
	if err := c.Ping(ctx); err == nil {
		t.Fatal("ping should fail")
	}
	_, err = p.CallToolJSON(ctx, tool, []byte(`{}`), nil)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("raw call after the session ended: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.callHdrs) > 0 {
		t.Fatalf("tools/call sent after the session ended, Mcp-Session-Id=%q", s.callHdrs[0].Get("Mcp-Session-Id"))
	}
}

// TestRawCallErrorStatusAsMCPGo: an error status with a JSON-RPC body is a
// response (a downstream error), as mcp-go reads it, not a dead connection.
func TestRawCallErrorStatusAsMCPGo(t *testing.T) {
	for _, body := range []string{`{"jsonrpc":"2.0","id":%s}`, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32000,"message":"busy"}}`, `oops %s`} {
		s := &handServer{}
		s.call = func(w http.ResponseWriter, id json.RawMessage, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, body, id)
		}
		p := startHand(t, s)
		tool := handTool(t, p, "t")
		ctx := context.Background()
		_, terr := p.CallTool(ctx, tool, []byte(`{}`), nil)
		_, rerr := p.CallToolJSON(ctx, tool, []byte(`{}`), nil)
		if terr == nil || rerr == nil || errors.Is(terr, ErrUnavailable) != errors.Is(rerr, ErrUnavailable) {
			t.Errorf("%s: mcp-go %v, raw %v", body, terr, rerr)
		}
	}
}

// TestRawCallSessionless404: a downstream without sessions (no
// Mcp-Session-Id) answers one tool's call 404 (a proxy in front of it,
// say). That call fails; the connection, and the other calls in flight on
// it, go on (there is no session to end), through mcp-go's client and the
// raw path alike.
func TestRawCallSessionless404(t *testing.T) {
	for _, raw := range []bool{false, true} {
		s := &handServer{tools: []string{"gone", "slow"}, sessionless: true}
		s.call = func(w http.ResponseWriter, id json.RawMessage, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if strings.Contains(string(body), `"name":"gone"`) {
				http.NotFound(w, r)
				return
			}
			time.Sleep(300 * time.Millisecond)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"content":[]}}`, id)
		}
		p := startHand(t, s)
		call := func(tl *Tool) error {
			if raw {
				_, err := p.CallToolJSON(context.Background(), tl, []byte(`{}`), nil)
				return err
			}
			_, err := p.CallTool(context.Background(), tl, []byte(`{}`), nil)
			return err
		}
		slowErr := make(chan error, 1)
		go func() { slowErr <- call(handTool(t, p, "slow")) }()
		time.Sleep(50 * time.Millisecond)
		gerr := call(handTool(t, p, "gone"))
		serr := <-slowErr
		s.mu.Lock()
		inits := s.inits
		s.mu.Unlock()
		if gerr == nil || serr != nil || inits != 1 {
			t.Errorf("raw=%v: the 404 call: %v; the concurrent call: %v; initializes: %d", raw, gerr, serr, inits)
		}
	}
}

// TestReadBodyClaimedLength: a body is not allocated at the length the
// server claims before its bytes arrive.
func TestReadBodyClaimedLength(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	resp := &http.Response{ContentLength: 64 << 20, Body: io.NopCloser(strings.NewReader(`{"x":1}`))}
	b, err := readBody(resp)
	runtime.ReadMemStats(&after)
	if string(b) != `{"x":1}` || err != nil {
		t.Fatalf("read %q, %v", b, err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("allocated %d bytes for a 7-byte body", n)
	}
}

// TestExactKeysScan: the key scanner finds top-level keys that only
// case-fold (or escape) to a result key, and nothing inside values.
func TestExactKeysScan(t *testing.T) {
	for raw, want := range map[string]bool{
		`{"content":[],"isError":true}`:                                 true,
		` { "content" : [ {"type":"text","ISERROR":"x"} ] } `:           true,
		`{"content":[],"ISERROR":false}`:                                false,
		`{"content":[],"isError":true,"IsError":false}`:                 false,
		`{"content":[],"is\u0045rror":false}`:                           false,
		`{"content":[{"text":"a\"b,\"ISERROR\":1"}],"x":{"ISERROR":1}}`: true,
		`{"content":[],"ſtructuredContent":{}}`:                         false,
		`{"content":[],"later":{"a":[1,{"b":"}"}]},"_meta":{}}`:         true,
		`[]`: false,
	} {
		if got := exactKeys([]byte(raw)); got != want {
			t.Errorf("%s: %v, want %v", raw, got, want)
		}
	}
}

// FuzzPlainText holds plainText to mcp-go's decoder and to an exact-key
// reader: whatever it accepts mcp-go decodes, with the same isError as the
// exact "isError" key, no resultType and no _meta. (go test -fuzz
// FuzzPlainText ./tools explores further; the seeds run with the tests.)
func FuzzPlainText(f *testing.F) {
	for _, seed := range []string{
		`{"content":[{"type":"text","text":"hi"}]}`,
		`{"content":[{"type":"text","text":"hi"}],"isError":true}`,
		` { "isError" : false , "content" : [ { "text" : "a\"b" , "type" : "text" } , {"type":"text","text":""} ] } `,
		`{"content":[],"structuredContent":{"a":[1,{"b":"}"}],"c":null}}`,
		`{"content":[{"type":"text","text":5}]}`,
		`{"content":[{"type":"text","text":"x","annotations":{}}]}`,
		`{"content":[{"type":"image","data":"x","mimeType":"image/png"}]}`,
		`{"content":[],"isError":true,"ISERROR":false}`,
		`{"content":[],"isError":true,"isError":false}`,
		`{"content":[],"is\u0045rror":true}`,
		`{"isError":false}`,
		`{"content":[{"type":"t\u0065xt","text":"x"}]}`,
		`{"content":{},"isError":true}`,
		`{"content":[],"structuredContent":"x","resultType":"complete"}`,
		`{"content":[{"text":"x"}]}`,
		`{}`,
		`[]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		isError, ok := plainText(raw)
		if !ok {
			return
		}
		msg := json.RawMessage(raw)
		res, err := mcp.ParseCallToolResult(&msg)
		if err != nil {
			t.Fatalf("%s: accepted, mcp-go refuses: %v", raw, err)
		}
		var exact map[string]json.RawMessage
		if err := json.Unmarshal(raw, &exact); err != nil {
			t.Fatal(err)
		}
		var exactIsError bool
		if v, ok := exact["isError"]; ok {
			_ = json.Unmarshal(v, &exactIsError)
		}
		if res.IsError != isError || exactIsError != isError || res.ResultType != "" || res.Meta != nil || !exactKeys(raw) {
			t.Fatalf("%s: isError %v, mcp-go %v, exact key %v, resultType %q, meta %v", raw, isError, res.IsError, exactIsError, res.ResultType, res.Meta)
		}
	})
}

// TestPlainTextAccepts: the common results take the path without decoding.
func TestPlainTextAccepts(t *testing.T) {
	for raw, want := range map[string]bool{
		`{"content":[{"type":"text","text":"hi"}]}`:                                         false,
		`{"content":[{"type":"text","text":"hi"}],"isError":true}`:                          true,
		` { "isError" : false , "content" : [ { "text" : "a\"b" , "type" : "text" } ] } `:   false,
		`{"structuredContent":{"a":[1,{"b":"}"}]},"content":[{"type":"text","text":"{}"}]}`: false,
		`{"content":[]}`: false,
	} {
		isError, ok := plainText([]byte(raw))
		if !ok || isError != want {
			t.Errorf("%s: plain %v isError %v", raw, ok, isError)
		}
	}
	for _, raw := range []string{
		`{"content":[{"type":"text","text":5}]}`, `{"content":[],"isError":true,"ISERROR":false}`,
		`{"content":[],"isError":true,"isError":false}`, `{"isError":false}`, `{"content":[{"type":"text","text":"x","_meta":{}}]}`,
		`{"content":[],"_meta":{}}`, `{"content":[],"x":1}`,
	} {
		if _, ok := plainText([]byte(raw)); ok {
			t.Errorf("%s: taken as plain", raw)
		}
	}
}
