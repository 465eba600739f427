package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/policies"
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

// current is the agent request context relays go to. A fast-lane call is
// handed to mcp-go first, so that the context carries the agent's session.
func (u *upstream) current() context.Context {
	u.mu.Lock()
	ctx := u.ctx
	u.mu.Unlock()
	if fastFrom(ctx) == nil {
		return ctx
	}
	sctx, err := sessionCtx(ctx)
	if err != nil {
		u.b.log.Warn("agent session unavailable for a relay", "call_id", u.c.id, "err", err)
		return ctx
	}
	u.mu.Lock()
	if u.ctx == ctx { // unless it was replaced meanwhile
		u.ctx = sctx
	}
	u.mu.Unlock()
	return sctx
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
	if err := u.authorize("elicitation/create", policies.ActionElicit); err != nil {
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
	if err := u.authorize("sampling/createMessage", policies.ActionSample); err != nil {
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
// non-blocking (a full session queue drops). For a fast-lane call the first
// notification hands the call over to mcp-go; the downstream's reader waits
// for that (at most notifyHandover), so that the notification still reaches
// the agent before the result that follows it on the same stream.
func (u *upstream) Notify(method string, params map[string]any) {
	u.mu.Lock()
	ctx := u.ctx
	u.mu.Unlock()
	if fastFrom(ctx) != nil {
		hctx, cancel := context.WithTimeout(ctx, notifyHandover)
		sctx, err := sessionCtx(hctx)
		cancel()
		if err != nil {
			u.b.log.Debug("notification to agent dropped: no session in time", "call_id", u.c.id, "method", method, "err", err)
			return
		}
		u.mu.Lock()
		if u.ctx == ctx {
			u.ctx = sctx
		}
		u.mu.Unlock()
		ctx = sctx
	}
	if err := u.b.mcp.SendNotificationToClient(ctx, method, params); err != nil {
		u.b.log.Debug("notification to agent dropped", "call_id", u.c.id, "method", method, "err", err)
	}
}

// notifyHandover bounds how long a notification holds the downstream's
// reader while its fast-lane call is handed over to mcp-go (a local step:
// microseconds normally).
const notifyHandover = time.Second

func originMessage(server, msg string) string {
	return fmt.Sprintf("[%s, via mcpbroker] %s", server, msg)
}

// errRelayDenied refuses a downstream's request to the agent by policy.
var errRelayDenied = errors.New("denied by the broker's policy")

// authorize decides a server-initiated request (elicitation, sampling)
// made while serving u's call: Cedar, one pass per principal, with the
// call's tool as the resource and the call's arguments in context. The
// decision is recorded either way; a deny (or an unwritable record) means
// the request never reaches the agent.
func (u *upstream) authorize(method string, action policies.Action) error {
	c := u.c
	a := c.acting
	if a == nil {
		return fmt.Errorf("%s: %w", method, errRelayDenied)
	}
	dec := u.b.engine.Decide(policies.Request{
		CallID: c.id, Action: action, Initiator: a.initiator, Chain: u.b.policyChain(a),
		Target: c.target, Args: c.args.Fields, RiskTags: c.riskTags, Now: u.b.now(), Task: u.b.taskContext(a),
	})
	ev := c.event(audit.CallDecided)
	ev.Method, ev.Decision, ev.PolicyIDs, ev.PolicyDigest = method, string(dec.Outcome), dec.PolicyIDs, dec.Digest
	ev.Detail = "request from the downstream to the agent"
	ev.Passes = auditPasses(dec)
	if dec.Outcome != policies.Allow {
		ev.Decision, ev.Reason = audit.DecisionDeny, string(ReasonDeniedByPolicy)
	}
	if _, err := u.b.ledger.Record(u.current(), ev); err != nil {
		u.b.log.Error("relay decision not recorded; refusing the relay", "call_id", c.id, "method", method, "err", err)
		return fmt.Errorf("%s: %w", method, errRelayDenied)
	}
	if dec.Outcome != policies.Allow {
		u.b.log.Info("downstream request to the agent denied by policy", "call_id", c.id, "method", method, "denied_by", dec.DeniedBy)
		return fmt.Errorf("%s: %w", method, errRelayDenied)
	}
	return nil
}
