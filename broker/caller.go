package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/tools"
)

// errNoCapability means the agent did not declare the capability a
// downstream's request needs; MCP forbids sending it anyway.
var errNoCapability = errors.New("the agent did not declare this capability")

// upstream relays what a downstream server sends back during one call
// (elicitation, sampling, roots, progress, logs) to the agent that made the
// call. It holds the agent's request context, which carries its MCP
// session.
type upstream struct {
	b *Broker
	c *call

	mu  sync.Mutex
	ctx context.Context
}

func (b *Broker) newCaller(ctx context.Context, c *call) tools.Caller {
	return &upstream{b: b, ctx: ctx, c: c}
}

// current is the agent request context relays go to.
func (u *upstream) current() context.Context {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.ctx
}

func (u *upstream) setCtx(ctx context.Context) {
	u.mu.Lock()
	u.ctx = ctx
	u.mu.Unlock()
}

func (u *upstream) caps() (mcp.ClientCapabilities, bool) {
	ctx := u.current()
	if info := server.RequestProtocolInfoFromContext(ctx); info != nil && info.Modern {
		if info.ClientCapabilities == nil {
			return mcp.ClientCapabilities{}, false
		}
		return *info.ClientCapabilities, true
	}
	if s, ok := server.ClientSessionFromContext(ctx).(server.SessionWithClientInfo); ok {
		return s.GetClientCapabilities(), true
	}
	return mcp.ClientCapabilities{}, false
}

func (u *upstream) relayed(method string, err error) {
	log := u.b.log.With("call_id", u.c.id, "method", method, "server", u.c.target.Server, "agent", u.c.identity.Agent)
	if err != nil {
		log.Warn("downstream request not relayed to the agent", "err", err)
		u.b.record(u.current(), audit.Event{Type: audit.RequestRejected, CallID: u.c.id, Session: u.c.session,
			Agent: u.c.identity.Agent, Initiator: u.c.identity.Initiator, Tenant: u.c.identity.Tenant,
			Method: method, Server: u.c.target.Server, Target: u.c.target.Exposed, Detail: truncate(err.Error(), 200)})
		return
	}
	log.Info("downstream request relayed to the agent")
}

func (u *upstream) Elicit(ctx context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	caps, ok := u.caps()
	if !ok || caps.Elicitation == nil {
		err := fmt.Errorf("elicitation/create: %w", errNoCapability)
		u.relayed("elicitation/create", err)
		return nil, err
	}
	// The human answering must know which server asks, not just "mcpbroker".
	req.Params.Message = originMessage(u.c.target.Server, req.Params.Message)
	res, err := u.b.mcp.RequestElicitation(u.current(), req)
	u.relayed("elicitation/create", err)
	return res, err
}

func (u *upstream) CreateMessage(ctx context.Context, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	caps, ok := u.caps()
	if !ok || caps.Sampling == nil {
		err := fmt.Errorf("sampling/createMessage: %w", errNoCapability)
		u.relayed("sampling/createMessage", err)
		return nil, err
	}
	res, err := u.b.mcp.RequestSampling(u.current(), req)
	u.relayed("sampling/createMessage", err)
	return res, err
}

func (u *upstream) ListRoots(ctx context.Context, req mcp.ListRootsRequest) (*mcp.ListRootsResult, error) {
	caps, ok := u.caps()
	if !ok || caps.Roots == nil {
		return nil, fmt.Errorf("roots/list: %w", errNoCapability)
	}
	res, err := u.b.mcp.RequestRoots(u.current(), req)
	u.relayed("roots/list", err)
	return res, err
}

// Notify forwards progress and log notifications. mcp-go's send is
// non-blocking (a full session queue drops), so this never stalls the
// downstream reader.
func (u *upstream) Notify(method string, params map[string]any) {
	if err := u.b.mcp.SendNotificationToClient(u.current(), method, params); err != nil {
		u.b.log.Debug("notification to agent dropped", "call_id", u.c.id, "method", method, "err", err)
	}
}

func originMessage(server, msg string) string {
	return fmt.Sprintf("[%s, via mcpbroker] %s", server, msg)
}
