package tools

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// The test binary is also a stdio MCP server, for the stdio tests: run with
// stdioServerEnv=1 it serves "echo" and "big" (an answer of the asked
// size) on stdin and stdout, and exits.
const stdioServerEnv = "MCPBROKER_TOOLS_TEST_STDIO_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(stdioServerEnv) == "1" {
		s := server.NewMCPServer("stdio-test", "1", server.WithToolCapabilities(false))
		s.AddTool(mcp.NewTool("echo", mcp.WithString("text")), func(_ context.Context, r mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultText(r.GetString("text", "")), nil
		})
		s.AddTool(mcp.NewTool("big", mcp.WithNumber("bytes")), func(_ context.Context, r mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultText(strings.Repeat("x", r.GetInt("bytes", 0))), nil
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
	spec := Spec{Name: "s", Transport: TransportStdio, Command: os.Args[0], Env: map[string]string{stdioServerEnv: "1"}, Prefix: "s__"}
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
	call := func(name string, args string) (*mcp.CallToolResult, error) {
		tool, ok := p.Snapshot().Tool("s__" + name)
		if !ok {
			return nil, errors.New("no tool s__" + name)
		}
		return p.CallTool(ctx, tool, []byte(args), nil)
	}
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

// TestStdioCloseLetsTheChildExit: closing the pool ends the child (its
// stdin closes and it exits), and Close does not wait for the grace
// periods when it does.
func TestStdioCloseLetsTheChildExit(t *testing.T) {
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

// TestSSEAnswerTooLarge: on the SSE transport every answer comes as an
// event on the standing stream; one over max_answer_bytes fails the call
// with ErrAnswerTooLarge at once (not after mcp-go's response timeout), the
// supervisor reconnects, and calls work after it.
func TestSSEAnswerTooLarge(t *testing.T) {
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
	hs := &http.Server{Handler: server.NewSSEServer(s, server.WithBaseURL(base))}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close() })

	logs := &lockedBuffer{}
	spec := Spec{Name: "e", Transport: TransportSSE, URL: base + "/sse", Prefix: "e__"}
	p, err := NewPool([]Spec{spec}, Options{MaxAnswerBytes: 64 << 10,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	call := func(name, args string) (*mcp.CallToolResult, error) {
		tool, ok := p.Snapshot().Tool("e__" + name)
		if !ok {
			return nil, errors.New("no tool e__" + name)
		}
		return p.CallTool(ctx, tool, []byte(args), nil)
	}
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
		ok   bool
	}{
		{"events within the limit", "data: abcd\n\ndata: efgh\r\n\r\ndata: ij\r\rdata: kl\n\n", true},
		{"an event of two lines over the limit", "data: ab\ndata: cd\n\n", false},
		{"CRLF is one line ending", "data: ab\r\ndata: c\r\n\r\n", false},
		{"an unterminated event over the limit", "data: abcdefgh", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
				b := &eventLimitedBody{ReadCloser: io.NopCloser(r), max: 12, lineStart: true}
				got, err := io.ReadAll(b)
				if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, ErrAnswerTooLarge) || tc.ok && string(got) != tc.in {
					t.Fatalf("got %q, %v (want ok %v)", got, err, tc.ok)
				}
			}
		})
	}
}
