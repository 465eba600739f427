package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// sseServer is a 2025-11-25 streamable HTTP server written by hand, for
// what mcp-go's server does not do: its tools/call answer is an SSE stream
// that asks the client for its roots, waits for the answer, and ends
// before the response (with an event id), which comes on the resumed
// stream (SEP-1699).
type sseServer struct {
	t           *testing.T
	mu          sync.Mutex
	callID      json.RawMessage
	roots       chan json.RawMessage // the client's answer to roots/list
	rootsAnswer string
	headers     []http.Header // of each tools/call and resume
}

func (s *sseServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		if r.Header.Get("Last-Event-ID") != "e1" {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		s.mu.Lock()
		s.headers = append(s.headers, r.Header.Clone())
		id := s.callID
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "id: e2\ndata: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"resumed\"}],\"extra\":{\"kept\":true}}}\n\n", id)
		return
	}
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusOK)
		return
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Result json.RawMessage `json:"result"`
	}
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	reply := func(result string) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Mcp-Session-Id", "s1")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, msg.ID, result)
	}
	switch {
	case msg.Method == "initialize":
		reply(`{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"hand","version":"1"}}`)
	case msg.Method == "tools/list":
		reply(`{"tools":[{"name":"slow","inputSchema":{"type":"object"}}]}`)
	case msg.Method == "tools/call":
		s.mu.Lock()
		s.callID = msg.ID
		s.headers = append(s.headers, r.Header.Clone())
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"roots/list\"}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-s.roots:
		case <-time.After(10 * time.Second):
			s.t.Error("no answer to roots/list")
		}
		fmt.Fprint(w, "id: e1\nretry: 10\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"half way\"}}\n\n")
	case msg.Method == "" && string(msg.ID) == "7":
		s.mu.Lock()
		s.rootsAnswer = string(body)
		s.mu.Unlock()
		s.roots <- msg.Result
		w.WriteHeader(http.StatusAccepted)
	default: // notifications, ping
		if len(msg.ID) > 0 {
			reply(`{}`)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
}

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
	srv := &sseServer{t: t, roots: make(chan json.RawMessage, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()

	p, err := NewPool([]Spec{{Name: "hand", Transport: TransportStreamableHTTP, URL: "http://" + ln.Addr().String() + "/mcp",
		Prefix: "h__", ProtocolVersion: mcp.ProtocolVersion20251125, Headers: map[string]string{"X-Team": "blue"}}},
		Options{Logger: slog.New(slog.NewTextHandler(testOut(t), &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tool, ok := p.Snapshot().Tool("h__slow")
	if !ok {
		t.Fatal("tool missing")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	caller := &rootsCaller{}
	res, err := p.CallToolJSON(WithCaller(ctx, caller), tool, []byte(`{"a":1}`), nil)
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
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if !strings.HasPrefix(string(srv.callID), `"mcpbroker-`) {
		t.Fatalf("call id %s: not the raw path", srv.callID)
	}
	if !strings.Contains(srv.rootsAnswer, `"uri":"file:///work"`) {
		t.Fatalf("answer to roots/list: %s", srv.rootsAnswer)
	}
	if len(srv.headers) != 2 {
		t.Fatalf("%d requests for the call, want the call and one resume", len(srv.headers))
	}
	for _, h := range srv.headers {
		if h.Get("Mcp-Session-Id") != "s1" || h.Get("Mcp-Protocol-Version") != mcp.ProtocolVersion20251125 || h.Get("X-Team") != "blue" {
			t.Fatalf("headers %v", h)
		}
	}
}
