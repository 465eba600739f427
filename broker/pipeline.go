package broker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/broker/metrics"
	"github.com/mcpbroker/mcpbroker/broker/store"
	"github.com/mcpbroker/mcpbroker/policies"
	"github.com/mcpbroker/mcpbroker/tools"
)

// call is one brokered request on its way through the pipeline.
type call struct {
	id       string
	method   string
	identity agents.Identity
	session  string
	target   policies.Target
	args     tools.Args
	start    time.Time
	acting   *acting  // task and chain; nil if refused before resolution
	riskTags []string // per-call tags from argument scanning (context.riskTags)
	span     *metrics.CallSpan
	traceCtx context.Context // carries the call's span, for propagation
}

// admit runs identity → policy → decision record for one request. It
// always returns the call (with its ID); a non-empty reason means the call
// was refused, and the refusal is already recorded and logged.
func (b *Broker) admit(ctx context.Context, method string, action policies.Action, target policies.Target, rawArgs []byte, meta *mcp.Meta) (*call, Reason) {
	target.Tenant = b.tenants[target.Server]
	c := &call{id: newCallID(), method: method, target: target, start: time.Now()}
	if s := server.ClientSessionFromContext(ctx); s != nil {
		c.session = s.SessionID()
	} else if fc := fastFrom(ctx); fc != nil {
		c.session = fc.sid
	}
	var metaFields map[string]any
	if meta != nil {
		metaFields = meta.AdditionalFields
	}
	c.traceCtx, c.span = b.tracer.StartCall(b.tracer.Extract(ctx, metaFields), metrics.Call{
		Method: method, Target: target.Exposed, Server: target.Server, CallID: c.id, Session: c.session,
	})
	log := lazyLog{b: b, c: c}
	id, ok := agents.FromContext(ctx)
	if !ok {
		ev := audit.Event{Type: audit.AuthFailed, CallID: c.id, Method: method, Server: target.Server, Target: target.Exposed,
			Decision: audit.DecisionDeny, Reason: string(ReasonUnauthenticated)}
		if err := agents.AuthErrorFromContext(ctx); err != nil {
			ev.Detail = err.Error()
		}
		b.record(ctx, ev)
		log.Warn("call refused: no identity")
		return c, ReasonUnauthenticated
	}
	c.identity = id
	args, err := tools.Canonicalize(rawArgs)
	if err != nil {
		b.recordDecision(ctx, c, nil, ReasonInvalidArguments, err.Error())
		log.Info("call refused: invalid arguments", "agent", id.Agent, "err", err)
		return c, ReasonInvalidArguments
	}
	c.args = args
	c.riskTags = b.callRiskTags(c)
	a, err := b.resolve(ctx, id, c.session, meta)
	if err != nil {
		reason := taskReason(err)
		b.recordDecision(ctx, c, nil, reason, err.Error())
		log.Info("call refused: task or chain", "agent", id.Agent, "reason", reason, "err", err)
		return c, reason
	}
	c.acting = a
	if action == policies.ActionReadResource && !a.allowsResource(target.Name) {
		err := fmt.Errorf("%w: %s is not among the task's resources %v", agents.ErrOutsideTask, target.Name, a.task.Resources)
		b.recordDecision(ctx, c, nil, ReasonOutsideTask, err.Error())
		log.Info("call refused: resource outside the task", "agent", id.Agent, "task", a.task.ID)
		return c, ReasonOutsideTask
	}
	explicit := a.task != nil && len(a.task.Resources) > 0 // checked by pattern above
	if (action == policies.ActionReadResource && !explicit || action == policies.ActionGetPrompt) && !b.allowsServer(a, target.Server) {
		// A task names tools; the servers they are on are the ones whose
		// resources (when it names none) and prompts it may use.
		err := fmt.Errorf("%w: no tool of server %s is among the task's tools", agents.ErrOutsideTask, target.Server)
		b.recordDecision(ctx, c, nil, ReasonOutsideTask, err.Error())
		log.Info("call refused: server outside the task", "agent", id.Agent, "server", target.Server)
		return c, ReasonOutsideTask
	}
	if action == policies.ActionCallTool && !a.allowsTool(target.Exposed) {
		taskID, tools := "", a.limit // a chain's own limit, when the caller has no task
		if a.task != nil {
			taskID, tools = a.task.ID, a.task.Tools
		}
		err := fmt.Errorf("%w: %s is not among the task's tools %v (limit %v)", agents.ErrOutsideTask, target.Exposed, tools, a.limit)
		b.recordDecision(ctx, c, nil, ReasonOutsideTask, err.Error())
		log.Info("call refused: outside the task", "agent", id.Agent, "task", taskID)
		return c, ReasonOutsideTask
	}
	policyStart := time.Now()
	dec := b.engine.Decide(policies.Request{
		CallID:    c.id,
		Action:    action,
		Initiator: a.initiator,
		Chain:     b.policyChain(a),
		Target:    target,
		Args:      args.Fields,
		RiskTags:  c.riskTags,
		Now:       b.now(),
		Task:      b.taskContext(a),
	})
	// An allowed call under a budgeted task is charged in the same
	// transaction that commits its decision record.
	var charge *store.Spend
	if dec.Outcome == policies.Allow && action == policies.ActionCallTool && target.Server != brokerServer {
		var err error
		if charge, err = b.charge(a); err != nil {
			reason := taskReason(err)
			b.recordDecision(ctx, c, &dec, reason, err.Error())
			return c, reason
		}
	}
	policyDur := time.Since(policyStart)
	reason := Reason("")
	switch dec.Outcome {
	case policies.Allow:
	case policies.NeedsApproval:
		// Human approval is its own stage (not built yet): without it, a
		// call that needs approval is denied, never let through.
		reason = ReasonApprovalRequired
	default:
		reason = ReasonDeniedByPolicy
	}
	b.metrics.CallDecided(string(dec.Outcome), string(reason), policyDur)
	c.span.Decided(string(dec.Outcome), string(reason), dec.PolicyIDs)
	if err := b.recordDecisionCharging(ctx, c, &dec, reason, "", charge); err != nil {
		if errors.Is(err, agents.ErrBudget) {
			b.recordDecision(ctx, c, &dec, ReasonOutsideTask, err.Error())
			log.Info("call refused: task budget", "agent", id.Agent, "task", a.task.ID, "err", err)
			return c, ReasonOutsideTask
		}
		log.Error("call refused: decision record not written", "err", err)
		return c, ReasonInternal
	}
	if reason != "" {
		log.Info("call denied", "agent", id.Agent, "initiator", id.Initiator, "reason", reason,
			"denied_by", dec.DeniedBy, "policies", dec.PolicyIDs)
		return c, reason
	}
	log.Debug("call allowed", "agent", id.Agent, "initiator", id.Initiator, "policies", dec.PolicyIDs)
	return c, ""
}

// lazyLog is a call's logger, built only when something is logged.
type lazyLog struct {
	b *Broker
	c *call
}

func (l lazyLog) get() *slog.Logger {
	c := l.c
	return l.b.log.With("call_id", c.id, "method", c.method, "target", c.target.Exposed, "server", c.target.Server)
}

func (l lazyLog) Info(msg string, args ...any)  { l.get().Info(msg, args...) }
func (l lazyLog) Warn(msg string, args ...any)  { l.get().Warn(msg, args...) }
func (l lazyLog) Error(msg string, args ...any) { l.get().Error(msg, args...) }
func (l lazyLog) Debug(msg string, args ...any) {
	if l.b.log.Enabled(context.Background(), slog.LevelDebug) {
		l.get().Debug(msg, args...)
	}
}

// event is an audit event about c with the call's identity, chain, task
// and target filled in.
func (c *call) event(typ audit.Type) audit.Event {
	return audit.Event{
		Type: typ, CallID: c.id, Session: c.session, Agent: c.identity.Agent,
		Initiator: c.initiatorID(), Tenant: c.tenant(), Chain: c.chain(), Task: c.taskID(),
		Method: c.method, Server: c.target.Server, Target: c.target.Exposed,
	}
}

func (c *call) initiatorID() string {
	if c.acting != nil {
		return c.acting.initiator.ID
	}
	return c.identity.Initiator
}

func (c *call) tenant() string {
	if c.acting != nil {
		return c.acting.initiator.Tenant
	}
	return c.identity.Tenant
}

func (c *call) chain() []string {
	if c.acting != nil {
		return c.acting.fullChain()
	}
	if c.identity.Agent == "" {
		return nil
	}
	return []string{c.identity.Agent}
}

func (c *call) taskID() string {
	if c.acting != nil && c.acting.task != nil {
		return c.acting.task.ID
	}
	return ""
}

// recordDecision writes the call.decided record. With dec nil the call was
// refused before policy (reason says why).
func (b *Broker) recordDecision(ctx context.Context, c *call, dec *policies.Decision, reason Reason, detail string) error {
	return b.recordDecisionCharging(ctx, c, dec, reason, detail, nil)
}

// recordDecisionCharging is recordDecision that also charges a call budget
// in the same commit (charge nil: none).
func (b *Broker) recordDecisionCharging(ctx context.Context, c *call, dec *policies.Decision, reason Reason, detail string, charge *store.Spend) error {
	ev := c.event(audit.CallDecided)
	ev.Decision, ev.Reason, ev.Detail = audit.DecisionDeny, string(reason), detail
	if c.args.Canonical != nil {
		ev.ArgsDigest = b.hasher.Digest(c.args.Canonical)
		ev.Args = b.classify(c)
	}
	if dec != nil {
		ev.Decision = string(dec.Outcome)
		ev.PolicyIDs = dec.PolicyIDs
		ev.PolicyDigest = dec.Digest
		ev.Passes = auditPasses(*dec)
		ev.ShadowOutcome = string(dec.ShadowOutcome)
		for _, sh := range dec.Shadow {
			ev.Shadow = append(ev.Shadow, string(sh.Effect)+":"+sh.PolicyID)
		}
		if cd := dec.Candidate; cd != nil {
			ev.Candidate = strings.TrimSpace(string(cd.Outcome) + " " + cd.Digest + " " + strings.Join(cd.PolicyIDs, ","))
		}
		if dec.DeniedBy != "" && ev.Detail == "" {
			ev.Detail = "denied by " + dec.DeniedBy
		}
	}
	var err error
	if charge != nil {
		_, err = b.ledger.RecordSpending(ctx, ev, *charge)
	} else {
		_, err = b.ledger.Record(ctx, ev)
	}
	return err
}

// complete writes the call.completed record. A failure to write it turns
// the response into an internal error: results are not released unrecorded.
func (b *Broker) complete(ctx context.Context, c *call, status string, class Reason, detail string) error {
	ev := c.event(audit.CallCompleted)
	ev.Status, ev.ErrorClass, ev.Detail = status, string(class), detail
	ev.LatencyMS = float64(time.Since(c.start).Microseconds()) / 1000
	_, err := b.ledger.Record(ctx, ev)
	if err != nil {
		b.log.Error("outcome record not written; withholding the result", "call_id", c.id, "err", err)
		status, class = audit.StatusError, ReasonInternal
	}
	b.metrics.Downstream(c.target.Server, status, time.Since(c.start))
	c.span.End(status, string(class))
	return err
}

// classify is the audit summary of c's arguments under the server's
// per-tool classification.
func (b *Broker) classify(c *call) map[string]string {
	args := c.args.Parsed
	if args == nil && len(c.args.Canonical) > 0 { // not from Canonicalize
		dec := json.NewDecoder(bytes.NewReader(c.args.Canonical))
		dec.UseNumber()
		if dec.Decode(&args) != nil {
			return nil
		}
	}
	if len(args) == 0 {
		return nil
	}
	return audit.Classify(b.hasher, b.classes[c.target.Server][c.target.Name], args)
}

// record writes an event that is not part of a call's decision; failures
// are logged (the request it describes is refused anyway).
func (b *Broker) record(ctx context.Context, ev audit.Event) {
	if _, err := b.ledger.Record(ctx, ev); err != nil {
		b.log.Error("audit record not written", "type", ev.Type, "err", err)
	}
}

// classify maps a forwarding error to an outcome status and reason.
func classify(ctx context.Context, err error) (string, Reason) {
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return audit.StatusTimeout, ReasonTimeout
	case errors.Is(err, context.Canceled) || ctx.Err() != nil:
		return audit.StatusCancelled, ReasonCancelled
	case errors.Is(err, tools.ErrUnavailable), errors.Is(err, tools.ErrUnknownTarget):
		return audit.StatusError, ReasonToolUnavailable
	}
	return audit.StatusError, ReasonDownstreamError
}

// refusal is the tool result an agent gets for a refused or failed call:
// a stable reason code and the call ID, never policy text or downstream
// internals.
func refusal(r Reason, callID string) *mcp.CallToolResult {
	text := fmt.Sprintf("mcpbroker: %s: %s", r, r.message())
	if callID != "" {
		text += fmt.Sprintf(" (call_id %s)", callID)
	}
	res := mcp.NewToolResultError(text)
	res.Meta = mcp.NewMetaFromMap(map[string]any{"io.mcpbroker/reason": string(r), "io.mcpbroker/call_id": callID})
	return res
}

// refusalError is the JSON-RPC error form, for resources/read and
// prompts/get, which have no error result.
func refusalError(r Reason, callID string) error {
	return fmt.Errorf("mcpbroker: %s: %s (call_id %s)", r, r.message(), callID)
}

// toolHandler is the pipeline for one catalog tool.
func (b *Broker) toolHandler(t tools.Tool) server.ToolHandlerFunc {
	target := policies.Target{
		Kind: policies.TargetTool, Server: t.Server, Name: t.Name, Exposed: t.Exposed,
		ReadOnly: t.ReadOnly, Destructive: t.Destructive, Idempotent: t.Idempotent, OpenWorld: t.OpenWorld,
		RiskTags: t.RiskTags,
	}
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if fc := adoptedCall(ctx); fc != nil {
			// A fast-lane call handed over in flight: its pipeline runs
			// on, with relays on this request's session.
			return fc.await(ctx)
		}
		target := target
		target.Unpinned = b.isUnpinned(t.Server, t.Name)
		if req.Params.RequestState != "" || len(req.Params.InputResponses) > 0 {
			if isApprovalState(req.Params.RequestState) {
				return b.resumeApproval(ctx, req, t)
			}
			return b.resumeParked(ctx, req)
		}
		raw := req.Params.RawArguments
		if raw == nil && req.Params.Arguments != nil {
			raw, _ = json.Marshal(req.Params.Arguments)
		}
		c, reason := b.admit(ctx, "tools/call", policies.ActionCallTool, target, raw, req.Params.Meta)
		if reason == ReasonApprovalRequired {
			// The approval stage: a human decides, in band (elicitation)
			// or out of band. pending is an answer the agent must get
			// first (input_required); otherwise there is a decision.
			pending, granted, r := b.approveCall(ctx, c, req)
			if pending != nil {
				return pending, nil
			}
			if reason = r; reason == "" {
				reason = b.readmit(ctx, c, granted)
			}
		}
		if reason != "" {
			c.span.End("refused", string(reason))
			return refusal(reason, c.id), nil
		}
		return b.forwardTool(ctx, c, t, raw, req.Params.Meta), nil
	}
}

// forwardTool sends an admitted call downstream and records its outcome.
func (b *Broker) forwardTool(ctx context.Context, c *call, t tools.Tool, raw []byte, meta *mcp.Meta) *mcp.CallToolResult {
	ctx, release := b.chainMeta(ctx, c, t)
	if c.traceCtx != nil {
		carrier := map[string]any{}
		b.tracer.Inject(c.traceCtx, carrier)
		ctx = tools.WithExtraMeta(ctx, carrier)
	}
	if server.IsModernRequest(ctx) {
		// The parked call may outlive this request: it releases the
		// chain token when the downstream call ends.
		res, _ := b.forwardParked(ctx, c, &t, raw, meta, release)
		return res
	}
	defer release()
	fctx, cancel := context.WithTimeout(ctx, b.callTimeout)
	defer cancel()
	fctx = tools.WithCaller(fctx, b.newCaller(ctx, c))
	if fc := fastFrom(ctx); fc != nil && !fc.modern {
		// The lane relays the result's bytes (fc.raw): the result
		// returned stands for them, with what finish needs.
		rr, err := b.pool.CallToolJSON(fctx, &t, raw, meta)
		var res *mcp.CallToolResult
		if err == nil {
			res = &mcp.CallToolResult{IsError: rr.IsError}
			fc.raw, fc.rawRes = rr.JSON, res
		}
		return b.finish(fctx, c, res, err)
	}
	res, err := b.pool.CallTool(fctx, &t, raw, meta)
	return b.finish(fctx, c, res, err)
}

// readmit decides a call again once a human has approved it: the real
// approval goes into the Cedar context and Cedar alone decides. It records
// the new decision, charging the task budget in the same commit.
func (b *Broker) readmit(ctx context.Context, c *call, granted *policies.Approval) Reason {
	if granted == nil || !granted.Granted || granted.CallID != c.id {
		return ReasonApprovalRequired
	}
	a := c.acting
	// The wait may have been long: a tool whose definition changed
	// meanwhile is unpinned now, whatever it was when the human was asked.
	if c.target.Kind == policies.TargetTool && b.isUnpinned(c.target.Server, c.target.Name) {
		c.target.Unpinned = true
	}
	dec := b.engine.Decide(policies.Request{
		CallID: c.id, Action: policies.ActionCallTool, Initiator: a.initiator, Chain: b.policyChain(a),
		Target: c.target, Args: c.args.Fields, RiskTags: c.riskTags, Now: b.now(), Task: b.taskContext(a), Approval: granted,
	})
	reason := Reason("")
	var charge *store.Spend
	if dec.Outcome != policies.Allow {
		reason = ReasonDeniedByPolicy
	} else if c.target.Server != brokerServer {
		var err error
		if charge, err = b.charge(a); err != nil {
			reason = taskReason(err)
		}
	}
	// The call's own record (written fail-closed, unlike the approval's
	// transitions) names the approval, who decided it and where.
	detail := fmt.Sprintf("after approval %s by %s (%s)", orDash(granted.ID), granted.Approver, orDash(granted.Channel))
	if err := b.recordDecisionCharging(ctx, c, &dec, reason, detail, charge); err != nil {
		if errors.Is(err, agents.ErrBudget) {
			b.recordDecision(ctx, c, &dec, ReasonOutsideTask, detail+": "+err.Error())
			return ReasonOutsideTask
		}
		return ReasonInternal
	}
	return reason
}

// finish records a forwarded call's outcome and shapes what the agent gets.
func (b *Broker) finish(ctx context.Context, c *call, res *mcp.CallToolResult, err error) *mcp.CallToolResult {
	if err != nil {
		status, class := classify(ctx, err)
		b.log.Warn("forwarded call failed", "call_id", c.id, "tool", c.target.Exposed, "server", c.target.Server, "class", class, "err", err)
		if rerr := b.complete(ctx, c, status, class, truncate(err.Error(), 200)); rerr != nil {
			return refusal(ReasonInternal, c.id)
		}
		return refusal(class, c.id)
	}
	status := audit.StatusOK
	if res.IsError {
		status = audit.StatusToolError
	}
	if err := b.complete(ctx, c, status, "", ""); err != nil {
		return refusal(ReasonInternal, c.id)
	}
	// Every call is in the audit ledger and the metrics; the per-call log
	// line is for debugging (at info it cost about 2% of a call's CPU).
	b.log.Debug("tool call forwarded", "call_id", c.id, "tool", c.target.Exposed, "agent", c.identity.Agent, "status", status,
		"latency_ms", time.Since(c.start).Milliseconds())
	return res
}

// resourceHandler is the pipeline for resources/read of one server.
func (b *Broker) resourceHandler(serverName string, r *tools.Resource) server.ResourceHandlerFunc {
	return func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		uri := req.Params.URI
		target := policies.Target{Kind: policies.TargetResource, Server: serverName, Name: uri, Exposed: uri,
			ReadOnly: true, Idempotent: true}
		c, reason := b.admit(ctx, "resources/read", policies.ActionReadResource, target, nil, req.Params.Meta)
		if reason != "" {
			c.span.End("refused", string(reason))
			return nil, refusalError(reason, c.id)
		}
		fctx, cancel := context.WithTimeout(ctx, b.callTimeout)
		defer cancel()
		fctx = tools.WithCaller(fctx, b.newCaller(ctx, c))
		res, err := b.pool.ReadResource(fctx, serverName, uri, req.Params.Meta)
		if err != nil {
			status, class := classify(fctx, err)
			_ = b.complete(ctx, c, status, class, truncate(err.Error(), 200))
			return nil, refusalError(class, c.id)
		}
		if err := b.complete(ctx, c, audit.StatusOK, "", ""); err != nil {
			return nil, refusalError(ReasonInternal, c.id)
		}
		return res.Contents, nil
	}
}

// promptHandler is the pipeline for prompts/get of one prompt.
func (b *Broker) promptHandler(p tools.Prompt) server.PromptHandlerFunc {
	target := policies.Target{Kind: policies.TargetPrompt, Server: p.Server, Name: p.Name, Exposed: p.Exposed,
		ReadOnly: true, Idempotent: true}
	return func(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		raw, _ := json.Marshal(req.Params.Arguments)
		c, reason := b.admit(ctx, "prompts/get", policies.ActionGetPrompt, target, raw, req.Params.Meta)
		if reason != "" {
			c.span.End("refused", string(reason))
			return nil, refusalError(reason, c.id)
		}
		fctx, cancel := context.WithTimeout(ctx, b.callTimeout)
		defer cancel()
		fctx = tools.WithCaller(fctx, b.newCaller(ctx, c))
		res, err := b.pool.GetPrompt(fctx, &p, req.Params.Arguments, req.Params.Meta)
		if err != nil {
			status, class := classify(fctx, err)
			_ = b.complete(ctx, c, status, class, truncate(err.Error(), 200))
			return nil, refusalError(class, c.id)
		}
		if err := b.complete(ctx, c, audit.StatusOK, "", ""); err != nil {
			return nil, refusalError(ReasonInternal, c.id)
		}
		return res, nil
	}
}

// callIDRand buffers crypto/rand for call IDs: one getrandom per 256 IDs
// instead of one per call. Call IDs name records; they are not secrets.
var callIDRand = struct {
	sync.Mutex
	r *bufio.Reader
}{r: bufio.NewReaderSize(rand.Reader, 4096)}

func newCallID() string {
	callIDRand.Lock()
	id, err := uuid.NewV7FromReader(callIDRand.r)
	callIDRand.Unlock()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// auditPasses is dec's passes as recorded.
func auditPasses(dec policies.Decision) []audit.Pass {
	out := make([]audit.Pass, 0, len(dec.Passes))
	for _, p := range dec.Passes {
		out = append(out, audit.Pass{Principal: p.Principal, Allowed: p.Allowed, Reasons: p.Reasons, Errors: p.Errors})
	}
	return out
}

// credentialNames are argument names (lower case, separators removed)
// that hold a credential and nothing else. Narrower than what the audit
// trail redacts (audit.IsSecretName, which would tag max_tokens or
// next_page_token): a risk tag denies calls, a redaction only hides.
var credentialNames = map[string]bool{
	"password": true, "passwd": true, "secret": true, "clientsecret": true, "apikey": true, "token": true,
	"authtoken": true, "accesstoken": true, "refreshtoken": true, "idtoken": true, "bearertoken": true,
	"apitoken": true, "secretkey": true, "accesskey": true, "privatekey": true, "authorization": true, "cookie": true,
	"credential": true, "credentials": true,
}

func isCredentialName(k string) bool {
	return credentialNames[strings.Map(func(r rune) rune {
		switch r {
		case '_', '-', '.', ' ':
			return -1
		}
		return unicode.ToLower(r)
	}, k)]
}

// callRiskTags are c's per-call tags for policy (context.riskTags):
// "secret_in_args" when an argument, at any depth, is classified secret
// for this tool or, unclassified, is named as a credential and not empty.
func (b *Broker) callRiskTags(c *call) []string {
	rules := b.classes[c.target.Server][c.target.Name]
	var walk func(prefix string, m map[string]any, depth int) bool
	walk = func(prefix string, m map[string]any, depth int) bool {
		for k, v := range m {
			path := k
			if prefix != "" {
				path = prefix + "." + k
			}
			class, explicit := rules[path]
			empty := v == nil || v == ""
			if explicit && class != audit.Public && class != audit.Sensitive || !explicit && !empty && isCredentialName(k) {
				return true
			}
			if sub, ok := v.(map[string]any); ok && depth < 8 && walk(path, sub, depth+1) {
				return true
			}
		}
		return false
	}
	if walk("", c.args.Parsed, 0) {
		return []string{"secret_in_args"}
	}
	return nil
}
