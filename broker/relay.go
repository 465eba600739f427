package broker

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/policies"
	"github.com/mcpbroker/mcpbroker/tools"
)

// A 2026-07-28 agent cannot receive server-initiated requests: the
// downstream's elicitation, sampling or roots request must travel as an
// input_required result (MRTR) that the agent answers in a retry of its
// tools/call. The downstream call cannot wait inside that first request,
// so the broker parks it: it keeps running in its own goroutine, the
// request it sent back is handed to the agent as input_required with a
// sealed requestState, and the agent's retry delivers the answer and waits
// for the next request or the result. Parked calls live in memory, bound to
// the identity that made them; the state is HMAC-sealed, expires, and is
// single-use.

var (
	errStateInvalid = errors.New("requestState is not valid")
	errStateExpired = errors.New("requestState has expired")
	errNotParked    = errors.New("no parked call for this requestState")
)

// parked is one downstream call waiting on its agent.
type parked struct {
	id      string
	who     string // identity key
	c       *call
	asks    chan *ask
	done    chan struct{} // closed when the downstream call has returned, out set
	out     outcome
	life    context.Context // the downstream call's; ends with it
	cancel  context.CancelFunc
	expires time.Time

	caller *parkCaller // relays go to the agent's latest request

	// settled is won by the one path that records the call's outcome:
	// its agent's request (the result, or its cancellation), expiry, or
	// shutdown. The others record nothing.
	settled atomic.Bool

	mu      sync.Mutex
	pending *ask        // the request the agent is to answer, if any
	expiry  *time.Timer // set with the first pending request
	caps    mcp.ClientCapabilities
}

// settle reports whether the caller is the one to record p's outcome;
// it also stops p's expiry timer and forgets p.
func (b *Broker) settle(p *parked) bool {
	if !p.settled.CompareAndSwap(false, true) {
		return false
	}
	p.mu.Lock()
	if p.expiry != nil {
		p.expiry.Stop()
	}
	p.mu.Unlock()
	b.relay.remove(p)
	return true
}

// outcomeWait bounds how long a path that ended a parked call (its agent
// left, it expired, shutdown) waits for the downstream call to return
// (nanoseconds; atomic, for the tests).
var outcomeWait atomic.Int64

// maxWaiting bounds the parked calls of one identity that wait on its
// answer at once: past it, a downstream's further requests to that agent
// fail (the downstream sees its elicitation or sampling refused), so an
// agent that never answers cannot pile up calls for call_timeout each
// (atomic, for the tests).
var maxWaiting atomic.Int64

func init() {
	outcomeWait.Store(int64(5 * time.Second))
	maxWaiting.Store(64)
}

type outcome struct {
	res *mcp.CallToolResult
	err error
}

// ask is one request from the downstream, waiting for the agent's answer.
type ask struct {
	key    string
	req    mcp.InputRequest
	answer chan mcp.InputResponse
}

type relay struct {
	key     []byte
	mu      sync.Mutex
	m       map[string]*parked
	n       uint64
	waiting map[string]int // identity key → its parked calls with a pending request
}

func newRelay() *relay {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return &relay{key: k, m: map[string]*parked{}, waiting: map[string]int{}}
}

// wait counts one more request waiting on who's answer, unless who has
// maxWaiting already.
func (r *relay) wait(who string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if int64(r.waiting[who]) >= maxWaiting.Load() {
		return false
	}
	r.waiting[who]++
	return true
}

// answered counts one request less waiting on who.
func (r *relay) answered(who string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waiting[who]--; r.waiting[who] <= 0 {
		delete(r.waiting, who)
	}
}

type sealedState struct {
	P   string `json:"p"`
	Who string `json:"w"`
	Ask string `json:"a"`
	Exp int64  `json:"e"`
}

func (r *relay) seal(p *parked, a *ask) string {
	who := sha256.Sum256([]byte(p.who))
	b, _ := json.Marshal(sealedState{P: p.id, Who: base64.RawURLEncoding.EncodeToString(who[:]), Ask: a.key, Exp: p.expires.Unix()})
	m := hmac.New(sha256.New, r.key)
	m.Write(b)
	return "mcpb1." + base64.RawURLEncoding.EncodeToString(b) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (r *relay) open(state string, id agents.Identity, now time.Time) (*parked, string, error) {
	parts := strings.Split(state, ".")
	if len(parts) != 3 || parts[0] != "mcpb1" {
		return nil, "", errStateInvalid
	}
	body, err1 := base64.RawURLEncoding.DecodeString(parts[1])
	mac, err2 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil {
		return nil, "", errStateInvalid
	}
	m := hmac.New(sha256.New, r.key)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), mac) {
		return nil, "", errStateInvalid
	}
	var s sealedState
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, "", errStateInvalid
	}
	who := sha256.Sum256([]byte(id.Key()))
	if s.Who != base64.RawURLEncoding.EncodeToString(who[:]) {
		return nil, "", fmt.Errorf("%w: bound to another identity", errStateInvalid)
	}
	if now.Unix() > s.Exp {
		return nil, "", errStateExpired
	}
	r.mu.Lock()
	p := r.m[s.P]
	r.mu.Unlock()
	if p == nil {
		return nil, "", errNotParked
	}
	return p, s.Ask, nil
}

func (r *relay) add(p *parked) {
	r.mu.Lock()
	r.n++
	p.id = fmt.Sprintf("%s-%d", p.c.id, r.n)
	r.m[p.id] = p
	r.mu.Unlock()
}

func (r *relay) remove(p *parked) {
	r.mu.Lock()
	delete(r.m, p.id)
	r.mu.Unlock()
}

// closeParked ends every parked call at shutdown: all are cancelled
// downstream, then given one outcomeWait to return, and each not already
// settled by its agent's request is recorded as cancelled (nobody else
// would: its agent is waiting to retry a request the broker will not
// serve).
func (b *Broker) closeParked(ctx context.Context) {
	b.relay.mu.Lock()
	all := make([]*parked, 0, len(b.relay.m))
	for _, p := range b.relay.m {
		all = append(all, p)
	}
	b.relay.mu.Unlock()
	for _, p := range all {
		p.mu.Lock()
		p.pending = nil // a retry arriving now finds nothing pending
		p.mu.Unlock()
		p.cancel()
	}
	wctx, cancel := context.WithTimeout(ctx, time.Duration(outcomeWait.Load()))
	defer cancel()
	for _, p := range all {
		select {
		case <-p.done:
		case <-wctx.Done():
		}
		if b.settle(p) {
			_ = b.complete(ctx, p.c, audit.StatusCancelled, ReasonCancelled, "broker shutting down while the call waited on its agent")
		}
	}
}

// parkCaller is the tools.Caller of a call made by a 2026-07-28 agent.
type parkCaller struct {
	*upstream
	p *parked
}

func (pc *parkCaller) put(ctx context.Context, method string, req mcp.InputRequest) (mcp.InputResponse, error) {
	if !pc.b.relay.wait(pc.p.who) {
		err := fmt.Errorf("%s: %d requests already wait on this agent's answers", method, maxWaiting.Load())
		pc.relayed(method, err)
		return mcp.InputResponse{}, err
	}
	defer pc.b.relay.answered(pc.p.who)
	a := &ask{req: req, answer: make(chan mcp.InputResponse, 1)}
	// ctx is the downstream transport's (for stdio, the connection's): the
	// parked call's own life bounds the wait too.
	select {
	case pc.p.asks <- a:
	case <-ctx.Done():
		return mcp.InputResponse{}, ctx.Err()
	case <-pc.p.life.Done():
		return mcp.InputResponse{}, pc.p.life.Err()
	}
	select {
	case resp := <-a.answer:
		pc.relayed(method, nil)
		return resp, nil
	case <-ctx.Done():
		pc.relayed(method, ctx.Err())
		return mcp.InputResponse{}, ctx.Err()
	case <-pc.p.life.Done():
		pc.relayed(method, pc.p.life.Err())
		return mcp.InputResponse{}, pc.p.life.Err()
	}
}

func (pc *parkCaller) Elicit(ctx context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	if pc.p.caps.Elicitation == nil {
		err := fmt.Errorf("elicitation/create: %w", errNoCapability)
		pc.relayed("elicitation/create", err)
		return nil, err
	}
	if err := pc.authorize("elicitation/create", policies.ActionElicit); err != nil {
		return nil, err
	}
	params := req.Params
	params.Message = originMessage(pc.c.target.Server, params.Message)
	resp, err := pc.put(ctx, "elicitation/create", mcp.NewElicitationInputRequest(params))
	if err != nil {
		return nil, err
	}
	if resp.Elicitation == nil {
		return nil, errors.New("the agent's answer is not an elicitation result")
	}
	return resp.Elicitation, nil
}

func (pc *parkCaller) CreateMessage(ctx context.Context, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	if pc.p.caps.Sampling == nil {
		err := fmt.Errorf("sampling/createMessage: %w", errNoCapability)
		pc.relayed("sampling/createMessage", err)
		return nil, err
	}
	if err := pc.authorize("sampling/createMessage", policies.ActionSample); err != nil {
		return nil, err
	}
	resp, err := pc.put(ctx, "sampling/createMessage", mcp.NewSamplingInputRequest(req.CreateMessageParams))
	if err != nil {
		return nil, err
	}
	if resp.Sampling == nil {
		return nil, errors.New("the agent's answer is not a sampling result")
	}
	return resp.Sampling, nil
}

func (pc *parkCaller) ListRoots(ctx context.Context, req mcp.ListRootsRequest) (*mcp.ListRootsResult, error) {
	if pc.p.caps.Roots == nil {
		return nil, fmt.Errorf("roots/list: %w", errNoCapability)
	}
	resp, err := pc.put(ctx, "roots/list", mcp.NewRootsInputRequest())
	if err != nil {
		return nil, err
	}
	if resp.Roots == nil {
		return nil, errors.New("the agent's answer is not a roots result")
	}
	return resp.Roots, nil
}

// forwardParked starts t's downstream call detached from the agent's
// request, so that it can outlive an input_required round trip, and waits
// for its first request or its result.
func (b *Broker) forwardParked(ctx context.Context, c *call, t *tools.Tool, raw []byte, meta *mcp.Meta, release func()) (*mcp.CallToolResult, error) {
	p := &parked{
		who:     c.identity.Key(),
		c:       c,
		asks:    make(chan *ask),
		done:    make(chan struct{}),
		expires: time.Now().Add(b.callTimeout),
	}
	if info := server.RequestProtocolInfoFromContext(ctx); info != nil && info.ClientCapabilities != nil {
		p.caps = *info.ClientCapabilities
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.callTimeout)
	p.life, p.cancel = dctx, cancel
	pc := &parkCaller{upstream: &upstream{b: b, ctx: ctx, c: c}, p: p}
	p.caller = pc
	b.relay.add(p)
	b.parkers.Go(func() {
		defer cancel()
		defer release()
		res, err := b.pool.CallTool(tools.WithCaller(dctx, pc), t, raw, meta)
		p.out = outcome{res: res, err: err}
		close(p.done)
	})
	return b.waitParked(ctx, p, pc)
}

// resumeParked handles a retry carrying inputResponses: it delivers the
// answer to the parked call and waits again.
func (b *Broker) resumeParked(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	id, ok := agents.FromContext(ctx)
	if !ok {
		return refusal(ReasonUnauthenticated, ""), nil
	}
	refuse := func(callID string, reason Reason, detail string) (*mcp.CallToolResult, error) {
		b.record(ctx, audit.Event{Type: audit.RequestRejected, CallID: callID, Agent: id.Agent, Initiator: id.Initiator, Tenant: id.Tenant,
			Method: "tools/call", Target: req.Params.Name, Decision: audit.DecisionDeny, Detail: "input response refused: " + detail})
		b.log.Warn("input response refused", "agent", id.Agent, "tool", req.Params.Name, "call_id", callID, "reason", detail)
		return refusal(reason, callID), nil
	}
	p, key, err := b.relay.open(req.Params.RequestState, id, b.now())
	if err != nil {
		reason := ReasonInvalidArguments
		if errors.Is(err, errStateExpired) {
			reason = ReasonTimeout // too late, not malformed
		}
		return refuse("", reason, err.Error())
	}
	p.mu.Lock()
	a := p.pending
	if a == nil || a.key != key || req.Params.Name != p.c.target.Exposed {
		p.mu.Unlock()
		return refuse(p.c.id, ReasonInvalidArguments, "it does not match the pending request (replayed or altered)")
	}
	resp, ok := req.Params.InputResponses[key]
	if !ok {
		p.mu.Unlock()
		return refuse(p.c.id, ReasonInvalidArguments, "no answer to the pending request")
	}
	p.pending = nil // single use
	p.mu.Unlock()
	if err := resp.DecodeFor(a.req.Method); err != nil {
		b.log.Warn("input response not decodable", "call_id", p.c.id, "err", err)
	}
	a.answer <- resp
	return b.waitParked(ctx, p, p.caller)
}

func (b *Broker) waitParked(ctx context.Context, p *parked, pc *parkCaller) (*mcp.CallToolResult, error) {
	pc.setCtx(ctx)
	for {
		select {
		case a := <-p.asks:
			if p.settled.Load() || p.life.Err() != nil {
				// The call is over (recorded, or past its deadline): its
				// request goes to nobody, and the downstream sees it
				// fail as its call ends.
				continue
			}
			p.mu.Lock()
			b.relay.mu.Lock()
			b.relay.n++
			a.key = fmt.Sprintf("mcpbroker.relay.%d", b.relay.n)
			b.relay.mu.Unlock()
			p.pending = a
			if p.expiry == nil { // one timer for the call: its expiry does not move
				p.expiry = time.AfterFunc(time.Until(p.expires)+time.Second, func() { b.expireParked(p) })
			}
			p.mu.Unlock()
			state := b.relay.seal(p, a)
			res := &mcp.CallToolResult{}
			res.MultiRoundTripResult = mcp.MultiRoundTripResult{InputRequests: mcp.InputRequests{a.key: a.req}, RequestState: state}
			res.ResultType = mcp.ResultTypeInputRequired
			return res, nil
		case <-p.done:
			if !b.settle(p) {
				return refusal(ReasonCancelled, p.c.id), nil // shutdown recorded it
			}
			return b.finish(ctx, p.c, p.out.res, p.out.err), nil
		case <-ctx.Done():
			// The agent went away while the call ran: cancel it downstream,
			// and record what it came to (or, if it does not return, that it
			// was cancelled).
			p.cancel()
			select {
			case <-p.done:
				if b.settle(p) {
					return b.finish(ctx, p.c, p.out.res, p.out.err), nil
				}
			case <-time.After(time.Duration(outcomeWait.Load())):
				if b.settle(p) {
					_ = b.complete(context.WithoutCancel(ctx), p.c, audit.StatusCancelled, ReasonCancelled,
						"the agent went away and the downstream call did not return after cancellation")
				}
			}
			return refusal(ReasonCancelled, p.c.id), nil
		}
	}
}

// expireParked ends a call whose agent never answered its pending
// request by the call's deadline: it is cancelled downstream and recorded
// as timed out, once.
func (b *Broker) expireParked(p *parked) {
	p.mu.Lock()
	stale := p.pending != nil
	// Claim the call: a retry arriving now finds nothing pending.
	p.pending = nil
	p.mu.Unlock()
	if !stale || !b.settle(p) {
		return
	}
	p.cancel()
	detail := "agent never answered the relayed request"
	select {
	case <-p.done:
		if p.out.err == nil {
			detail += " (the downstream call returned a result nobody received)"
		}
	case <-time.After(time.Duration(outcomeWait.Load())):
	}
	_ = b.complete(context.Background(), p.c, audit.StatusTimeout, ReasonTimeout, detail)
}
