package tools

import (
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// BenchmarkDownstreamCall is one tools/call to a 2025-11-25 mcp-go server
// over streamable HTTP on 127.0.0.1, as the fast lane makes it: through
// mcp-go's client then encoded for the agent (before), and through the raw
// path (CallToolJSON). Both sub-benchmarks run against the same server in
// one run; the allocations and time include the server's share.
func BenchmarkDownstreamCall(b *testing.B) {
	s := server.NewMCPServer("bench", "1")
	s.AddTool(mcp.NewTool("echo", mcp.WithString("text")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText(req.GetString("text", "")), nil
	})
	p := servePool(b, server.NewStreamableHTTPServer(s), Spec{Name: "bench", Prefix: "b__", ProtocolVersion: mcp.ProtocolVersion20251125}, io.Discard)
	tool, ok := p.Snapshot().Tool("b__echo")
	if !ok {
		b.Fatal("tool missing")
	}
	args := []byte(`{"text":"hello world"}`)
	ctx := context.Background()
	calls := map[string]func() error{
		"mcp-go": func() error {
			res, err := p.CallTool(ctx, tool, args, nil)
			if err == nil {
				_, err = json.Marshal(res)
			}
			return err
		},
		"raw": func() error {
			_, err := p.CallToolJSON(ctx, tool, args, nil)
			return err
		},
	}
	for _, name := range []string{"mcp-go", "raw"} {
		call := calls[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := call(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
