package tools

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// TestListChangedOverHTTP: a 2026-07-28 HTTP downstream that adds a tool
// is re-synced through its subscriptions/listen stream, well before the
// periodic re-sync.
func TestListChangedOverHTTP(t *testing.T) {
	s := server.NewMCPServer("grows", "1", server.WithToolCapabilities(true))
	s.AddTool(mcp.NewTool("one"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("1"), nil
	})
	p := servePool(t, server.NewStreamableHTTPServer(s), Spec{Name: "grows", Prefix: "g__"}, testOut(t))
	if _, ok := p.Snapshot().Tool("g__one"); !ok {
		t.Fatal("initial tool missing")
	}
	s.AddTool(mcp.NewTool("two"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("2"), nil
	})
	deadline := time.Now().Add(10 * time.Second) // the periodic re-sync is 30 s
	for {
		if _, ok := p.Snapshot().Tool("g__two"); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("new tool not seen within 10 s: list_changed was not delivered")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testOut(t *testing.T) io.Writer {
	if testing.Verbose() {
		return tWriter{t}
	}
	return io.Discard
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// servePool serves h on 127.0.0.1 and returns a started pool with the one
// streamable HTTP server spec (its URL filled in), logging to out; both
// stop when tb ends.
func servePool(tb testing.TB, h http.Handler, spec Spec, out io.Writer) *Pool {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go func() { _ = hs.Serve(ln) }()
	tb.Cleanup(func() { hs.Close() })
	spec.Transport, spec.URL = TransportStreamableHTTP, "http://"+ln.Addr().String()+"/mcp"
	p, err := NewPool([]Spec{spec}, Options{Logger: slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.Start(context.Background(), 10*time.Second); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}
