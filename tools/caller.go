package tools

import (
	"context"

	"github.com/mark3labs/mcp-go/mcp"
)

// Caller is the agent side of one brokered call, as a downstream server
// sees it: requests the server sends back while serving the call are
// relayed to it. The pipeline provides one per call (it checks policy and
// records each relayed request); implementations must be safe for
// concurrent use.
type Caller interface {
	Elicit(ctx context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error)
	CreateMessage(ctx context.Context, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error)
	ListRoots(ctx context.Context, req mcp.ListRootsRequest) (*mcp.ListRootsResult, error)
	// Notify delivers a notification (progress with the agent's own token
	// restored, or a log message) to the agent. It must not block.
	Notify(method string, params map[string]any)
}

type callerKey struct{}

// WithCaller returns ctx carrying c for the downstream call made with it.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

func callerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok && c != nil
}

type extraMetaKey struct{}

// WithExtraMeta returns ctx asking that the downstream request carry these
// _meta fields (the broker's own, such as a chain token). Unlike the
// agent's _meta, which is filtered, they are sent as given.
func WithExtraMeta(ctx context.Context, m map[string]any) context.Context {
	if prev := extraMeta(ctx); len(prev) > 0 {
		merged := make(map[string]any, len(prev)+len(m))
		for k, v := range prev {
			merged[k] = v
		}
		for k, v := range m {
			merged[k] = v
		}
		m = merged
	}
	return context.WithValue(ctx, extraMetaKey{}, m)
}

func extraMeta(ctx context.Context) map[string]any {
	m, _ := ctx.Value(extraMetaKey{}).(map[string]any)
	return m
}
