package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Downstream is the MCP server every target ends at: tools echo (returns
// its "text" argument; other arguments are read and dropped) and sleep
// (waits "ms" milliseconds), plus Extra filler tools for tools/list scale.
type Downstream struct {
	URL string
	hs  *http.Server
	ln  net.Listener
}

// StartDownstream serves the downstream on a loopback port. Close stops it.
func StartDownstream(extra int) (*Downstream, error) {
	s := server.NewMCPServer("bench-downstream", "1", server.WithToolCapabilities(false))
	ro := true
	echo := mcp.NewTool("echo", mcp.WithDescription("Returns text."), mcp.WithString("text"), mcp.WithString("blob"))
	echo.Annotations.ReadOnlyHint = &ro
	s.AddTool(echo, func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText(req.GetString("text", "")), nil
	})
	sleep := mcp.NewTool("sleep", mcp.WithDescription("Sleeps ms milliseconds."), mcp.WithNumber("ms"))
	sleep.Annotations.ReadOnlyHint = &ro
	s.AddTool(sleep, func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		t := time.NewTimer(time.Duration(req.GetFloat("ms", 0) * float64(time.Millisecond)))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return mcp.NewToolResultText("slept"), nil
	})
	var fill []server.ServerTool
	for i := range extra {
		t := mcp.NewTool(fmt.Sprintf("tool_%04d", i), mcp.WithDescription(fmt.Sprintf("Filler tool %d for tools/list at scale.", i)),
			mcp.WithString("path", mcp.Description("a path")), mcp.WithNumber("limit"))
		t.Annotations.ReadOnlyHint = &ro
		fill = append(fill, server.ServerTool{Tool: t, Handler: func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return mcp.NewToolResultText("ok"), nil
		}})
	}
	if len(fill) > 0 {
		s.AddTools(fill...)
	}
	url, hs, ln, err := serveMCP(s)
	if err != nil {
		return nil, err
	}
	return &Downstream{URL: url, hs: hs, ln: ln}, nil
}

// Close stops the server.
func (d *Downstream) Close() error { return closeServer(d.hs) }

// serveMCP serves an mcp-go server over streamable HTTP at /mcp on a
// loopback port with mcp-go's defaults (both protocol eras).
func serveMCP(s *server.MCPServer) (string, *http.Server, net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", server.NewStreamableHTTPServer(s, server.WithSessionIdleTTL(30*time.Minute)))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/mcp", hs, ln, nil
}

func closeServer(hs *http.Server) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := hs.Shutdown(ctx); err != nil {
		return hs.Close()
	}
	return nil
}
