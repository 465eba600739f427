package tools

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/mark3labs/mcp-go/client/transport"
)

// tap wraps a client transport to capture the raw result bytes of chosen
// requests. mcp-go's typed ListTools drops JSON Schema keywords it does not
// model (notes/mcp-go.md pitfall 1); the raw bytes let the broker re-export
// tool definitions byte-exact. Capture is opt-in per call through the
// context, so concurrent requests are never mixed up.
type tap struct {
	transport.Interface
}

type rawSink struct {
	method string
	mu     sync.Mutex
	pages  []json.RawMessage
}

type sinkKey struct{}

func withSink(ctx context.Context, s *rawSink) context.Context {
	return context.WithValue(ctx, sinkKey{}, s)
}

func (t *tap) SendRequest(ctx context.Context, req transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
	resp, err := t.Interface.SendRequest(ctx, req)
	if err == nil && resp != nil && resp.Error == nil {
		if s, ok := ctx.Value(sinkKey{}).(*rawSink); ok && s.method == req.Method {
			s.mu.Lock()
			s.pages = append(s.pages, append(json.RawMessage(nil), resp.Result...))
			s.mu.Unlock()
		}
	}
	return resp, err
}

// The wrappers below keep the optional interfaces mcp-go's client looks for
// on its transport (bidirectional requests, HTTP protocol version, legacy
// requirement, connection loss), exactly as the wrapped transport has them.

type tapStdio struct {
	*tap
	inner *transport.Stdio
}

func (t *tapStdio) SetRequestHandler(h transport.RequestHandler) { t.inner.SetRequestHandler(h) }

type tapHTTP struct {
	*tap
	inner *transport.StreamableHTTP
}

func (t *tapHTTP) SetRequestHandler(h transport.RequestHandler) { t.inner.SetRequestHandler(h) }
func (t *tapHTTP) SetProtocolVersion(v string)                  { t.inner.SetProtocolVersion(v) }
func (t *tapHTTP) RequiresLegacyProtocol() bool                 { return t.inner.RequiresLegacyProtocol() }

type tapSSE struct {
	*tap
	inner *transport.SSE
}

func (t *tapSSE) SetProtocolVersion(v string)                { t.inner.SetProtocolVersion(v) }
func (t *tapSSE) SetConnectionLostHandler(h func(err error)) { t.inner.SetConnectionLostHandler(h) }

var (
	_ transport.BidirectionalInterface = (*tapStdio)(nil)
	_ transport.BidirectionalInterface = (*tapHTTP)(nil)
	_ transport.HTTPConnection         = (*tapHTTP)(nil)
	_ transport.HTTPConnection         = (*tapSSE)(nil)
)
