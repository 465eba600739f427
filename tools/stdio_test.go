package tools

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// The test binary is also a stdio MCP server, for the stdio tests: run with
// stdioServerEnv=1 it serves "echo" and "big" (an answer of the asked
// size), "sleep", "stderr_flood" and "spawn_and_exit" on stdin and stdout,
// and exits.
const stdioServerEnv = "MCPBROKER_TOOLS_TEST_STDIO_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(rawServerEnv) == "1" {
		rawServer()
		os.Exit(0)
	}
	if os.Getenv(stdioServerEnv) == "1" {
		s := server.NewMCPServer("stdio-test", "1", server.WithToolCapabilities(false))
		s.AddTool(mcp.NewTool("echo", mcp.WithString("text")), func(_ context.Context, r mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultText(r.GetString("text", "")), nil
		})
		s.AddTool(mcp.NewTool("big", mcp.WithNumber("bytes")), func(_ context.Context, r mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultText(strings.Repeat("x", r.GetInt("bytes", 0))), nil
		})
		s.AddTool(mcp.NewTool("sleep", mcp.WithNumber("ms")), func(_ context.Context, r mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			time.Sleep(time.Duration(r.GetInt("ms", 0)) * time.Millisecond)
			return mcp.NewToolResultText("slept"), nil
		})
		s.AddTool(mcp.NewTool("stderr_flood", mcp.WithNumber("bytes")), func(_ context.Context, r mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			fmt.Fprintf(os.Stderr, "%s\nafter the flood\n", strings.Repeat("e", r.GetInt("bytes", 0)))
			return mcp.NewToolResultText("flooded"), nil
		})
		s.AddTool(mcp.NewTool("spawn_and_exit", mcp.WithString("pidfile")), func(_ context.Context, r mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			// A descendant that keeps the server's stdout and stderr open
			// after the server itself exits.
			c := exec.Command("sleep", "60")
			c.Stdout, c.Stderr = os.Stdout, os.Stderr
			if err := c.Start(); err != nil {
				return nil, err
			}
			_ = os.WriteFile(r.GetString("pidfile", ""), []byte(strconv.Itoa(c.Process.Pid)), 0o600)
			os.Exit(0)
			return nil, nil
		})
		if err := server.ServeStdio(s); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// stdioPool starts a pool with this test binary as its stdio server "s".
func stdioPool(t *testing.T, maxAnswer int64, logs io.Writer) *Pool {
	t.Helper()
	return startPool(t, Spec{Name: "s", Transport: TransportStdio, Command: os.Args[0], Env: map[string]string{stdioServerEnv: "1"}, Prefix: "s__"}, maxAnswer, logs)
}

// startPool starts a pool on spec with this answer limit, logging to logs
// at debug level, and closes it at cleanup.
func startPool(t *testing.T, spec Spec, maxAnswer int64, logs io.Writer) *Pool {
	t.Helper()
	p, err := NewPool([]Spec{spec}, Options{MaxAnswerBytes: maxAnswer,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// callNamed calls the tool exposed as name on p.
func callNamed(ctx context.Context, p *Pool, name, args string) (*mcp.CallToolResult, error) {
	tool, ok := p.Snapshot().Tool(name)
	if !ok {
		return nil, errors.New("no tool " + name)
	}
	return p.CallTool(ctx, tool, []byte(args), nil)
}

// lockedBuffer is a log sink the pool's goroutines write while the test
// reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStdioAnswerTooLarge: a stdio server's answer over max_answer_bytes
// fails the call with ErrAnswerTooLarge instead of being buffered whole;
// the connection it was on ends, the supervisor says why and starts the
// server again, and calls work after it.
func TestStdioAnswerTooLarge(t *testing.T) {
	logs := &lockedBuffer{}
	p := stdioPool(t, 64<<10, logs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	call := func(name, args string) (*mcp.CallToolResult, error) { return callNamed(ctx, p, "s__"+name, args) }
	if res, err := call("big", `{"bytes":1000}`); err != nil || res.IsError {
		t.Fatalf("a 1000-byte answer: %v %+v", err, res)
	}
	_, err := call("big", `{"bytes":1048576}`)
	if !errors.Is(err, ErrAnswerTooLarge) {
		t.Fatalf("a 1 MiB answer: got %v, want ErrAnswerTooLarge", err)
	}
	// The supervisor reconnects (a new child) and calls work again.
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := call("echo", `{"text":"again"}`)
		if err == nil && !res.IsError {
			if got := res.Content[0].(mcp.TextContent).Text; got != "again" {
				t.Fatalf("echo after the reconnect: %q", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no working call after the reconnect: %v\nlogs:\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if l := logs.String(); !strings.Contains(l, "downstream answer over the size limit") || !strings.Contains(l, "reconnecting") {
		t.Errorf("the logs do not say why the connection ended:\n%s", l)
	}
}

// TestStdioCloseEndsTheChild: closing the pool ends the child (the pool's
// context kills its process group; a reconnect instead closes its stdin
// and gives it stdioExitGrace) and reaps it before Close returns.
func TestStdioCloseEndsTheChild(t *testing.T) {
	p := stdioPool(t, 0, io.Discard)
	d, err := p.server("s")
	if err != nil {
		t.Fatal(err)
	}
	d.mu.RLock()
	c := d.client
	d.mu.RUnlock()
	ts, ok := c.GetTransport().(*tapStdio)
	if !ok {
		t.Fatalf("transport %T", c.GetTransport())
	}
	start := time.Now()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > stdioExitGrace {
		t.Errorf("Close took %v", took)
	}
	select {
	case <-ts.child.exited:
	default:
		t.Errorf("the child had not exited (and been reaped) when Close returned")
	}
}

func TestLineLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		max  int64
		ok   bool
	}{
		{"lines within the limit", "abcd\nefgh\n\nij", 4, true},
		{"a line at the limit, then a longer one", "abcd\nabcde\n", 4, false},
		{"the last line unterminated and too long", "ab\nabcdefgh", 4, false},
		{"no limit", strings.Repeat("x", 1<<16) + "\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in)), iotest.HalfReader(strings.NewReader(tc.in))} {
				var tripped error
				l := &lineLimit{r: r, max: tc.max, tripped: func(err error) { tripped = err }}
				got, err := io.ReadAll(l)
				if tc.ok {
					if err != nil || string(got) != tc.in {
						t.Fatalf("got %q, %v; want all of it", got, err)
					}
					continue
				}
				if !errors.Is(err, ErrAnswerTooLarge) || !errors.Is(tripped, ErrAnswerTooLarge) || l.over() == nil {
					t.Fatalf("err %v, tripped %v, over %v; want ErrAnswerTooLarge", err, tripped, l.over())
				}
				if _, err := l.Read(make([]byte, 8)); !errors.Is(err, ErrAnswerTooLarge) {
					t.Fatalf("a read after the limit: %v", err)
				}
			}
		})
	}
}

// ssePool serves "echo" and "big" with mcp-go's SSE-transport server on
// 127.0.0.1 (its handler passed through wrap, if set) and starts a pool
// on it as server "e" with a 64 KiB answer limit.
func ssePool(t *testing.T, wrap func(http.Handler) http.Handler, logs io.Writer) *Pool {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := server.NewMCPServer("sse-test", "1", server.WithToolCapabilities(false))
	s.AddTool(mcp.NewTool("echo", mcp.WithString("text")), func(_ context.Context, r mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText(r.GetString("text", "")), nil
	})
	s.AddTool(mcp.NewTool("big", mcp.WithNumber("bytes")), func(_ context.Context, r mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText(strings.Repeat("x", r.GetInt("bytes", 0))), nil
	})
	base := "http://" + ln.Addr().String()
	var h http.Handler = server.NewSSEServer(s, server.WithBaseURL(base))
	if wrap != nil {
		h = wrap(h)
	}
	hs := &http.Server{Handler: h}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close() })
	return startPool(t, Spec{Name: "e", Transport: TransportSSE, URL: base + "/sse", Prefix: "e__"}, 64<<10, logs)
}

// TestSSEAnswerTooLarge: on the SSE transport every answer comes as an
// event on the standing stream; one over max_answer_bytes fails the call
// with ErrAnswerTooLarge at once (not after mcp-go's response timeout), the
// supervisor reconnects, and calls work after it.
func TestSSEAnswerTooLarge(t *testing.T) {
	logs := &lockedBuffer{}
	p := ssePool(t, nil, logs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	call := func(name, args string) (*mcp.CallToolResult, error) { return callNamed(ctx, p, "e__"+name, args) }
	if res, err := call("big", `{"bytes":1000}`); err != nil || res.IsError {
		t.Fatalf("a 1000-byte answer: %v %+v", err, res)
	}
	start := time.Now()
	if _, err := call("big", `{"bytes":1048576}`); !errors.Is(err, ErrAnswerTooLarge) {
		t.Fatalf("a 1 MiB answer: got %v, want ErrAnswerTooLarge\nlogs:\n%s", err, logs.String())
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the oversized answer failed after %v", took)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := call("echo", `{"text":"again"}`)
		if err == nil && !res.IsError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no working call after the reconnect: %v\nlogs:\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if l := logs.String(); !strings.Contains(l, "SSE stream ended") {
		t.Errorf("the logs do not say why the connection ended:\n%s", l)
	}
}

func TestEventLimitedBody(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   string // what is read before the limit (all of in when it passes)
	}{
		{"events within the limit", "data: abcd\n\ndata: efgh\r\n\r\ndata: ij\n\n", "data: abcd\n\ndata: efgh\r\n\r\ndata: ij\n\n"},
		{"an event of two lines over the limit", "data: ab\ndata: cd\n\n", "data: ab\ndata"},
		// mcp-go splits lines at LF only: CRs neither end a line nor make
		// a blank one.
		{"CRs are not line ends", "data: ab\r\rdata: cd\n\n", "data: ab\r\rda"},
		{"a line of CRs then LF is not blank if it has data", "data: ab\r\r\ndata: cd\n\n", "data: ab\r\r\nda"},
		{"an unterminated event over the limit", "data: abcdefgh", "data: abcdef"},
		{"a whole event before the oversized one is delivered", "data: 1\n\n" + "data: 23456789\n\n", "data: 1\n\n" + "data: 234567"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
				b := &eventLimitedBody{ReadCloser: io.NopCloser(r), max: 12}
				got, err := io.ReadAll(b)
				if tc.ok == tc.in {
					if err != nil || string(got) != tc.in {
						t.Fatalf("got %q, %v; want all of it", got, err)
					}
					continue
				}
				if !errors.Is(err, ErrAnswerTooLarge) || string(got) != tc.ok {
					t.Fatalf("got %q, %v; want %q, then ErrAnswerTooLarge", got, err, tc.ok)
				}
			}
		})
	}
}

// TestLimitsNameTheAnswer: the limit error carries the JSON-RPC id of the
// answer that passed it when its first bytes name it at the top level.
func TestLimitsNameTheAnswer(t *testing.T) {
	for _, tc := range []struct{ in, id string }{
		{`{"jsonrpc":"2.0","id":3.0,"result":{"x":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`, "3.0"},
		{`{"id":1,"jsonrpc":"2.0","id":2,"result":{"x":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`, "2"}, // the last, as encoding/json
		{`{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`, "7"},
		{`{"jsonrpc":"2.0","id":"a\"b","result":{"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`, `"a\"b"`},
		{`{"result":{"id":5,"text":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`, ""}, // nested id only
		{`{"result":{"x":[1,{"id":3}]},"id":9,"jsonrpc":"2.0","more":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx`, "9"},
		{`{"jsonrpc":"2.0","result":"id","id":12`, ""}, // cut short: the number may go on
	} {
		got, answer := topLevel([]byte(tc.in))
		if string(got) != tc.id || !answer {
			t.Errorf("topLevel(%.50q) = %q, %v; want %q, true", tc.in, got, answer, tc.id)
		}
	}
	in := "event: message\ndata: " + `{"jsonrpc":"2.0","id":42,"result":{"text":"` + strings.Repeat("x", 200) + "\n\n"
	b := &eventLimitedBody{ReadCloser: io.NopCloser(strings.NewReader(in)), max: 100}
	_, err := io.ReadAll(b)
	var over *tooLargeError
	if !errors.As(err, &over) || string(over.id) != "42" {
		t.Fatalf("event limit error %v: id %q", err, over.id)
	}
	var n mcp.RequestId = mcp.NewRequestId(int64(42))
	if !over.concerns(n) || over.concerns(mcp.NewRequestId(int64(43))) {
		t.Errorf("concerns: 42 %v, 43 %v", over.concerns(n), over.concerns(mcp.NewRequestId(int64(43))))
	}
	l := &lineLimit{r: strings.NewReader(`{"jsonrpc":"2.0","id":"s-1","result":"` + strings.Repeat("y", 200) + "\n"), max: 100}
	_, err = io.ReadAll(l)
	if !errors.As(err, &over) || string(over.id) != `"s-1"` || !over.concerns(mcp.NewRequestId("s-1")) {
		t.Fatalf("line limit error %v", err)
	}
}

// TestLimitsBlameNoCallForServerMessages: an oversized request or
// notification from the server is no call's answer: no call is told its
// answer was too large (they fail as a lost connection). An id spelled
// differently (3.0) still names request 3, as mcp-go matches it.
func TestLimitsBlameNoCallForServerMessages(t *testing.T) {
	big := strings.Repeat("x", 1000)
	for _, tc := range []struct{ name, msg string }{
		{"server request", `{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage","params":{"messages":[{"role":"user","content":{"type":"text","text":"` + big + `"}}]}}` + "\n"},
		{"server request, method after a long id", `{"jsonrpc":"2.0","id":3,"method":"x","params":"` + big + `"}` + "\n"},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"` + big + `"}}` + "\n"},
		// encoding/json writes mcp.JSONRPCRequest's method after its params.
		{"server request, method after long params", `{"jsonrpc":"2.0","id":3,"params":{"messages":[{"role":"user","content":{"type":"text","text":"` + big + `"}}]},"method":"sampling/createMessage"}` + "\n"},
	} {
		l := &lineLimit{r: strings.NewReader(tc.msg), max: 600}
		_, err := io.ReadAll(l)
		var over *tooLargeError
		if !errors.As(err, &over) {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if over.concerns(mcp.NewRequestId(int64(3))) {
			t.Errorf("%s: the broker's request 3 is told its answer was too large", tc.name)
		}
	}
	l := &lineLimit{r: strings.NewReader(`{"jsonrpc":"2.0","id":3.0,"result":{"x":"` + big + `"}}` + "\n"), max: 600}
	_, err := io.ReadAll(l)
	var over *tooLargeError
	if !errors.As(err, &over) || !over.concerns(mcp.NewRequestId(int64(3))) || over.concerns(mcp.NewRequestId(int64(4))) {
		t.Errorf("id 3.0: %v", err)
	}
}

// TestGetsAreCapped: every GET's body is capped, whatever its
// Content-Type: per event when the request asked for an event stream (as
// mcp-go's transports do), else as a whole.
func TestGetsAreCapped(t *testing.T) {
	for _, ct := range []string{"", "text/plain", "Text/Event-Stream", "TEXT/EVENT-STREAM; charset=utf-8"} {
		for _, accept := range []string{"", "text/event-stream"} {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if ct == "" {
					w.Header()["Content-Type"] = nil // no sniffing
				} else {
					w.Header().Set("Content-Type", ct)
				}
				_, _ = io.WriteString(w, "event: message\ndata: "+strings.Repeat("x", 1<<20)+"\n\n")
			}))
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			if accept != "" {
				req.Header.Set("Accept", accept)
			}
			resp, err := limitAnswers(srv.Client(), 64<<10).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			srv.Close()
			if !errors.Is(err, ErrAnswerTooLarge) {
				t.Errorf("Content-Type %q, Accept %q: a 1 MiB event passed a 64 KiB limit (%d bytes, %v)", ct, accept, len(got), err)
			}
		}
	}
}

// TestLineLimitDeliversWholeLinesFirst: the lines before an oversized one
// (answers to other requests) are delivered before the error.
func TestLineLimitDeliversWholeLinesFirst(t *testing.T) {
	good := `{"jsonrpc":"2.0","id":1,"result":{}}` + "\n"
	for _, r := range []io.Reader{strings.NewReader(good + strings.Repeat("x", 200) + "\n"), iotest.OneByteReader(strings.NewReader(good + strings.Repeat("x", 200) + "\n"))} {
		l := &lineLimit{r: r, max: 64}
		got, err := io.ReadAll(l)
		if !errors.Is(err, ErrAnswerTooLarge) || string(got) != good+strings.Repeat("x", 64) {
			t.Fatalf("got %q, %v", got, err)
		}
	}
}

// TestStdioOtherCallsNotTooLarge: when one answer passes the limit, the
// other calls in flight on that connection fail as a lost connection, not
// as too large.
func TestStdioOtherCallsNotTooLarge(t *testing.T) {
	p := stdioPool(t, 64<<10, &lockedBuffer{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	call := func(name, args string) error {
		_, err := callNamed(ctx, p, "s__"+name, args)
		return err
	}
	slow := make(chan error, 1)
	go func() { slow <- call("sleep", `{"ms":1500}`) }()
	time.Sleep(200 * time.Millisecond)
	if err := call("big", `{"bytes":1048576}`); !errors.Is(err, ErrAnswerTooLarge) {
		t.Fatalf("big: %v", err)
	}
	if err := <-slow; err == nil || errors.Is(err, ErrAnswerTooLarge) {
		t.Fatalf("the slow call on the same connection: %v (want a lost connection)", err)
	}
}

// TestSSEWithoutEventStreamContentType: mcp-go's SSE transport reads its
// stream whatever the Content-Type; the limit applies all the same.
func TestSSEWithoutEventStreamContentType(t *testing.T) {
	p := ssePool(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(plainCT{w}, r) })
	}, &lockedBuffer{})
	tool, ok := p.Snapshot().Tool("e__big")
	if !ok {
		t.Fatal("no tool")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := p.CallTool(ctx, tool, []byte(`{"bytes":1048576}`), nil); !errors.Is(err, ErrAnswerTooLarge) {
		t.Fatalf("a 1 MiB answer through a 64 KiB limit: %v", err)
	}
}

// plainCT serves text/event-stream as text/plain.
type plainCT struct{ http.ResponseWriter }

func (w plainCT) fix() {
	if w.Header().Get("Content-Type") == "text/event-stream" {
		w.Header().Set("Content-Type", "text/plain")
	}
}
func (w plainCT) WriteHeader(code int)        { w.fix(); w.ResponseWriter.WriteHeader(code) }
func (w plainCT) Write(b []byte) (int, error) { w.fix(); return w.ResponseWriter.Write(b) }
func (w plainCT) Flush()                      { w.fix(); w.ResponseWriter.(http.Flusher).Flush() }

// TestResumedAnswerTooLarge: a streamable HTTP answer the server resumes
// over GET (SEP-1699) that passes the limit fails as ErrAnswerTooLarge
// through mcp-go's client (which reports the cut stream as a nil response).
func TestResumedAnswerTooLarge(t *testing.T) {
	hs := &handServer{tools: []string{"big"}}
	hs.call = func(w http.ResponseWriter, id json.RawMessage, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "id: call-%s\nretry: 10\ndata:\n\n", id) // a priming event, then the stream ends
	}
	hs.get = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "id: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"%s\"}]}}\n\n",
			strings.TrimPrefix(r.Header.Get("Last-Event-ID"), "call-"), strings.Repeat("x", 1<<20))
	}
	srv := httptest.NewServer(hs)
	t.Cleanup(srv.Close) // after the pool's cleanup
	p := startPool(t, Spec{Name: "h", Transport: TransportStreamableHTTP, URL: srv.URL, Prefix: "h__", ProtocolVersion: "2025-11-25"}, 64<<10, io.Discard)
	tool, ok := p.Snapshot().Tool("h__big")
	if !ok {
		t.Fatal("no tool")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.CallTool(ctx, tool, []byte(`{}`), nil); !errors.Is(err, ErrAnswerTooLarge) {
		t.Fatalf("a resumed 1 MiB answer through a 64 KiB limit: %v", err)
	}
}

// TestEventLimitNoCRBypass: streams that use CRs to look like many short
// lines or events, while mcp-go reads one long line or one long event, are
// capped.
func TestEventLimitNoCRBypass(t *testing.T) {
	for _, in := range []string{
		"data: " + strings.Repeat("xxxxxxxx\r\r", 100_000),     // no LF: one line to mcp-go
		strings.Repeat("data: xxxxxxxxxxxxxxxx\r\r\n", 50_000), // no blank line: one event to mcp-go
	} {
		b := &eventLimitedBody{ReadCloser: io.NopCloser(strings.NewReader(in)), max: 64}
		if got, err := io.ReadAll(b); !errors.Is(err, ErrAnswerTooLarge) || len(got) > 64+8 {
			t.Errorf("%.30q…: %d bytes through a 64-byte limit, %v", in, len(got), err)
		}
	}
}

// TestStdioServerExitsLeavingADescendant: a server that exits while a
// process it started still holds its stdout and stderr ends the
// connection when it exits (the call in flight fails at once, not at its
// deadline); the supervisor kills what is left of the group and starts
// the server again.
func TestStdioServerExitsLeavingADescendant(t *testing.T) {
	logs := &lockedBuffer{}
	p := stdioPool(t, 0, logs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tool, ok := p.Snapshot().Tool("s__spawn_and_exit")
	if !ok {
		t.Fatal("no tool")
	}
	pidfile := t.TempDir() + "/pid"
	start := time.Now()
	callCtx, callCancel := context.WithTimeout(ctx, 20*time.Second)
	_, err := p.CallTool(callCtx, tool, []byte(`{"pidfile":`+strconv.Quote(pidfile)+`}`), nil)
	callCancel()
	if err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("the call to a server that exited: %v after %v", err, time.Since(start))
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(string(b))
	deadline := time.Now().Add(20 * time.Second)
	for {
		echo, _ := p.Snapshot().Tool("s__echo")
		if echo != nil {
			if res, err := p.CallTool(ctx, echo, []byte(`{"text":"again"}`), nil); err == nil && !res.IsError {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no working call after the server exited\nlogs:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The descendant was killed with the group (a zombie waiting for its
	// new parent to reap it counts as gone).
	for {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the descendant %d outlived the server's restart: %s", pid, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStdioLongStderrLine: a stderr line longer than the log takes is
// logged truncated, the lines after it are logged, and the server is not
// taken for dead.
func TestStdioLongStderrLine(t *testing.T) {
	logs := &lockedBuffer{}
	p := stdioPool(t, 0, logs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	call := func(name, args string) (*mcp.CallToolResult, error) { return callNamed(ctx, p, "s__"+name, args) }
	if res, err := call("stderr_flood", `{"bytes":2097152}`); err != nil || res.IsError {
		t.Fatalf("stderr_flood: %v %+v", err, res)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "after the flood") {
		if time.Now().After(deadline) {
			t.Fatalf("the line after the long one was not logged:\n%.2000s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if res, err := call("echo", `{"text":"still here"}`); err != nil || res.IsError {
		t.Fatalf("echo after the long stderr line: %v %+v", err, res)
	}
	l := logs.String()
	if !strings.Contains(l, "truncated=true") || strings.Contains(l, "reconnecting") {
		t.Errorf("want one truncated stderr line and no reconnect:\n%.2000s", l)
	}
	if len(l) > 1<<20 {
		t.Errorf("the log took %d bytes for a 2 MiB stderr line", len(l))
	}
}

// rawServerEnv makes the test binary a hand-written stdio server
// (rawServer): it answers tools/call "bye" with a text of
// RAW_SERVER_SIZE bytes and exits at once (with code RAW_SERVER_EXIT);
// with RAW_SERVER_STALL=1 it stops reading stdin instead of answering;
// with RAW_SERVER_PAIR=1 it waits for a second call and answers both.
const rawServerEnv = "MCPBROKER_TOOLS_TEST_RAW_SERVER"

func rawServer() {
	in := bufio.NewReader(os.Stdin)
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	size, _ := strconv.Atoi(os.Getenv("RAW_SERVER_SIZE"))
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return
		}
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		_ = json.Unmarshal(line, &m)
		if m.ID == nil {
			continue
		}
		switch m.Method {
		case "initialize":
			fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"raw","version":"1"}}}`+"\n", m.ID)
		case "tools/list":
			fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"bye","inputSchema":{"type":"object"}}]}}`+"\n", m.ID)
		case "tools/call":
			if os.Getenv("RAW_SERVER_STALL") == "1" {
				time.Sleep(time.Hour) // busy: stdin is not read any more
			}
			if os.Getenv("RAW_SERVER_PAIR") == "1" {
				// Wait for a second call; answer the first (big), then the
				// second ("small"), then exit.
				line2, _ := in.ReadBytes('\n')
				var m2 struct {
					ID json.RawMessage `json:"id"`
				}
				_ = json.Unmarshal(line2, &m2)
				fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"%s"}]}}`+"\n", m.ID, strings.Repeat("x", size))
				fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"small"}]}}`+"\n", m2.ID)
				out.Flush()
				os.Exit(0)
			}
			fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"%s"}]}}`+"\n", m.ID, strings.Repeat("x", size))
			out.Flush()
			code, _ := strconv.Atoi(os.Getenv("RAW_SERVER_EXIT"))
			os.Exit(code)
		default:
			fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no"}}`+"\n", m.ID)
		}
		out.Flush()
	}
}

func rawPool(t *testing.T, env map[string]string, logs io.Writer) *Pool {
	t.Helper()
	env[rawServerEnv] = "1"
	return startPool(t, Spec{Name: "s", Transport: TransportStdio, Command: os.Args[0], Env: env, Prefix: "s__"}, 0, logs)
}

// TestStdioAnswerThenExit: an answer a server writes just before it exits
// reaches its call (the connection ends after stdout is drained, not at
// the exit).
func TestStdioAnswerThenExit(t *testing.T) {
	for _, size := range []int{100, 4 << 20} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			logs := &lockedBuffer{}
			p := rawPool(t, map[string]string{"RAW_SERVER_SIZE": strconv.Itoa(size)}, logs)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var prev *client.Client
			for i := 0; i < 3; i++ {
				deadline := time.Now().Add(20 * time.Second)
				for { // the connection to the server started after the last one exited
					d, _ := p.server("s")
					if c, err := d.current(); err == nil && c != prev {
						prev = c
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("no reconnect\n%s", logs.String())
					}
					time.Sleep(10 * time.Millisecond)
				}
				res, err := callNamed(ctx, p, "s__bye", `{}`)
				if err != nil || len(res.Content) != 1 || len(res.Content[0].(mcp.TextContent).Text) != size {
					t.Fatalf("call %d: the answer written before the exit was lost: %v", i, err)
				}
			}
		})
	}
}

// TestStdioStdinStall: a server that stops reading its stdin while
// requests fill the pipe ends the connection after its StdinTimeout; the
// call blocked writing fails then, not when the process dies.
func TestStdioStdinStall(t *testing.T) {
	logs := &lockedBuffer{}
	p := startPool(t, Spec{Name: "s", Transport: TransportStdio, Command: os.Args[0], StdinTimeout: time.Second,
		Env: map[string]string{rawServerEnv: "1", "RAW_SERVER_STALL": "1"}, Prefix: "s__"}, 0, logs)
	go func() { // makes the server stall
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = callNamed(ctx, p, "s__bye", `{}`)
	}()
	time.Sleep(200 * time.Millisecond)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := callNamed(ctx, p, "s__bye", `{"blob":"`+strings.Repeat("a", 256<<10)+`"}`)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the call to a stalled server succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a call to a server that does not read its stdin is still blocked after 10 s")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "stopped reading its stdin") {
		if time.Now().After(deadline) {
			t.Fatalf("no log of the stall:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLogStderrLines: CRLF, a final line without a newline, a line of
// exactly stderrLine bytes (whole, not truncated), and a longer one
// (truncated, the next line still logged).
func TestLogStderrLines(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		lines    []int  // lengths of the logged lines
		trunc    []bool // which were marked truncated
	}{
		{"crlf and a final line without newline", "a\r\nbb\nccc", []int{1, 2, 3}, []bool{false, false, false}},
		{"exactly stderrLine bytes", strings.Repeat("x", stderrLine) + "\nnext\n", []int{stderrLine, 4}, []bool{false, false}},
		{"stderrLine bytes then CRLF", strings.Repeat("x", stderrLine) + "\r\nnext\n", []int{stderrLine, 4}, []bool{false, false}},
		{"a longer line", strings.Repeat("y", 200<<10) + "\nnext\n", []int{stderrLine + 2, 4}, []bool{true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			h := &lineRecorder{}
			d := &downstream{log: slog.New(h)}
			done := make(chan struct{})
			go func() { d.logStderr(r); close(done) }()
			go func() { _, _ = io.WriteString(w, tc.in); w.Close() }()
			<-done
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.lines) != len(tc.lines) {
				t.Fatalf("%d lines logged, want %d", len(h.lines), len(tc.lines))
			}
			for i := range h.lines {
				if len(h.lines[i]) != tc.lines[i] || h.trunc[i] != tc.trunc[i] {
					t.Errorf("line %d: %d bytes, truncated %v; want %d, %v", i, len(h.lines[i]), h.trunc[i], tc.lines[i], tc.trunc[i])
				}
			}
		})
	}
}

// lineRecorder is a slog handler keeping each record's line and truncated
// attributes.
type lineRecorder struct {
	mu    sync.Mutex
	lines []string
	trunc []bool
}

func (h *lineRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *lineRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *lineRecorder) WithGroup(string) slog.Handler            { return h }
func (h *lineRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var line string
	tr := false
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "line":
			line = a.Value.String()
		case "truncated":
			tr = a.Value.Bool()
		}
		return true
	})
	h.lines = append(h.lines, line)
	h.trunc = append(h.trunc, tr)
	return nil
}

// TestStdioAnswersDrainedAfterExit: a big answer and a small one written
// back to back just before the server exits both reach their calls, however
// long the big one takes to decode (the drain waits for the reader, not a
// fixed time).
func TestStdioAnswersDrainedAfterExit(t *testing.T) {
	p := rawPool(t, map[string]string{"RAW_SERVER_SIZE": strconv.Itoa(8 << 20), "RAW_SERVER_PAIR": "1"}, &lockedBuffer{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	big := make(chan error, 1)
	go func() { _, err := callNamed(ctx, p, "s__bye", `{}`); big <- err }()
	time.Sleep(100 * time.Millisecond)
	res, err := callNamed(ctx, p, "s__bye", `{}`)
	if err != nil || len(res.Content) != 1 || res.Content[0].(mcp.TextContent).Text != "small" {
		t.Errorf("the small answer written before the exit: %v", err)
	}
	if err := <-big; err != nil {
		t.Errorf("the big answer written before the exit: %v", err)
	}
}

// TestStdioExitStatusLogged: the reason a connection was lost names the
// server's exit status.
func TestStdioExitStatusLogged(t *testing.T) {
	for i := 0; i < 5; i++ {
		logs := &lockedBuffer{}
		p := rawPool(t, map[string]string{"RAW_SERVER_SIZE": "10", "RAW_SERVER_EXIT": "3"}, logs)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _ = callNamed(ctx, p, "s__bye", `{}`)
		cancel()
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(logs.String(), "downstream server lost") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if l := logs.String(); !strings.Contains(l, "exit status 3") {
			t.Fatalf("run %d: the exit status is not in the reason:\n%s", i, l)
		}
		p.Close()
	}
}

// TestStallWriterProgress: a reader that takes its input slowly but
// steadily is not taken for stalled, though the whole write takes longer
// than the timeout; one that stops reading is.
func TestStallWriterProgress(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	stalled := false
	sw := &stallWriter{f: w, timeout: 300 * time.Millisecond, stalled: func() { stalled = true }}
	go func() { // 64 KiB every 100 ms
		buf := make([]byte, 64<<10)
		for {
			time.Sleep(100 * time.Millisecond)
			if _, err := r.Read(buf); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	if _, err := sw.Write(make([]byte, 1<<20)); err != nil || stalled {
		t.Fatalf("a slow, steady reader: %v (stalled %v)", err, stalled)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Logf("the write took %v (shorter than the timeout; the test proves less)", time.Since(start))
	}
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	sw2 := &stallWriter{f: w2, timeout: 300 * time.Millisecond, stalled: func() { stalled = true }}
	if _, err := sw2.Write(make([]byte, 1<<20)); !errors.Is(err, os.ErrDeadlineExceeded) || !stalled {
		t.Fatalf("a reader that stopped: %v (stalled %v)", err, stalled)
	}
	w.Close()
	w2.Close()
}
