package bench

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Proxy is a transparent mcp-go proxy: no identity, no policy, no records.
// It re-exposes the downstream's tools under their own names and forwards
// each call with client.CallTool over one shared downstream client with a
// pooled HTTP transport (as the broker's pool does). It is the floor of one
// extra hop the broker is measured against.
type Proxy struct {
	URL string
	hs  *http.Server
	ds  *client.Client
}

// StartProxy connects to downstreamURL speaking era ("" negotiates) and
// serves the proxy on a loopback port.
func StartProxy(ctx context.Context, downstreamURL, era string) (*Proxy, error) {
	tr, err := transport.NewStreamableHTTP(downstreamURL, transport.WithHTTPBasicClient(pooledHTTPClient()))
	if err != nil {
		return nil, err
	}
	var opts []client.ClientOption
	if era != "" {
		opts = append(opts, client.WithProtocolVersion(era))
	}
	ds := client.NewClient(tr, opts...)
	if err := ds.Start(ctx); err != nil {
		return nil, fmt.Errorf("proxy: start downstream client: %w", err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = era
	init.Params.ClientInfo = mcp.Implementation{Name: "bench-proxy", Version: "1"}
	if _, err := ds.Initialize(ctx, init); err != nil {
		_ = ds.Close()
		return nil, fmt.Errorf("proxy: initialize downstream: %w", err)
	}
	s := server.NewMCPServer("bench-proxy", "1", server.WithToolCapabilities(false))
	var st []server.ServerTool
	var cursor mcp.Cursor
	for {
		req := mcp.ListToolsRequest{}
		req.Params.Cursor = cursor
		lt, err := ds.ListTools(ctx, req)
		if err != nil {
			_ = ds.Close()
			return nil, fmt.Errorf("proxy: list downstream tools: %w", err)
		}
		for _, t := range lt.Tools {
			name := t.Name
			st = append(st, server.ServerTool{Tool: t, Handler: func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				out := mcp.CallToolRequest{}
				out.Params.Name = name
				out.Params.RawArguments = req.Params.RawArguments
				if out.Params.RawArguments == nil {
					out.Params.Arguments = req.Params.Arguments
				}
				return ds.CallTool(ctx, out)
			}})
		}
		if lt.NextCursor == "" {
			break
		}
		cursor = lt.NextCursor
	}
	s.AddTools(st...)
	url, hs, _, err := serveMCP(s)
	if err != nil {
		_ = ds.Close()
		return nil, err
	}
	return &Proxy{URL: url, hs: hs, ds: ds}, nil
}

// Close stops serving and closes the downstream client.
func (p *Proxy) Close() error {
	err := closeServer(p.hs)
	_ = p.ds.Close()
	return err
}

func pooledHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	t.IdleConnTimeout = 90 * time.Second
	return &http.Client{Transport: t}
}
