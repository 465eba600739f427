package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker/approval"
	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/policies"
	"github.com/mcpbroker/mcpbroker/tools"
)

// The approval stage: a call that policy says needs approval (a forbid
// annotated @approval(...) that an approval cures) waits for a human.
//
//   - In band, to the initiator, when the policies allow it
//     (@approval("required") or @approval("initiator")) and the agent
//     declared elicitation: a form-mode elicitation in the agent's UI. A
//     2026-07-28 agent gets input_required (InputRequestBuilder) with a
//     sealed requestState and answers in a retry (resumeApproval). A
//     2025-11-25 agent gets the same elicitation/create the mcp-go legacy
//     bridge would send, but issued here, bounded by the approval deadline:
//     the bridge waits on the request context without a bound
//     (server/mrtr.go fulfillInputRequests), so an unanswered prompt would
//     outlive the approval timeout.
//   - Out of band, when a policy names an approver group
//     (@approval("approver:secops")) or the agent cannot elicit: a pending
//     approval that approvers decide with `mcpbroker approvals`, the admin
//     and approver APIs, or the /approvals page. The call waits, sending
//     progress notifications if the agent asked for them, and returns when
//     the decision lands or the deadline passes (approval_timeout).
//
// Policy annotations next to @approval: @approval_timeout("2m") (default
// approvals.timeout, 5m), @approval_scope("session"|"task") (default once;
// every policy that asked must allow the wider scope), @reason("...") (the
// text shown to the human).
//
// After approval the real approval goes into the Cedar context and the call
// is decided again (readmit): Cedar alone allows it.

// Reasons of the approval stage.
const (
	ReasonApprovalDenied  Reason = "approval_denied"
	ReasonApprovalTimeout Reason = "approval_timeout"
)

// elicitKey names the broker's approval question among the input requests.
const elicitKey = "mcpbroker.approval"

// ApprovalKeyFile is the broker's requestState sealing key in the data dir.
const ApprovalKeyFile = "approval.key"

// Policy annotations the approval stage reads.
const (
	annApprovalTimeout = "approval_timeout"
	annApprovalScope   = "approval_scope"
	annReason          = "reason"
)

func isApprovalState(s string) bool { return strings.HasPrefix(s, approval.StatePrefix) }

// approvalStage holds the approval service and what the channels need.
type approvalStage struct {
	svc       *approval.Service
	sealer    *approval.Sealer
	webhook   *approval.Webhook
	whTimeout time.Duration
	cfg       ApprovalsConfig
	approvers []approverCred
	web       *webSessions

	stopping atomic.Bool // the HTTP server is shutting down
	watched  sync.Map    // *http.Server → true
}

// approverCred is a configured approver; only the token's hash is kept.
type approverCred struct {
	id         string
	groups     []string
	initiators []string
	tenants    []string
	hash       [32]byte
}

// approver is who the credential names, for the approval service.
func (a approverCred) approver() approval.Approver {
	return approval.Approver{ID: a.id, Groups: a.groups, Initiators: a.initiators, Tenants: a.tenants}
}

// visible is the records of rs that a may see (its tenants').
func (a approverCred) visible(rs []*approval.Record) []*approval.Record {
	out := rs[:0:0]
	for _, r := range rs {
		if a.approver().MaySee(r) {
			out = append(out, r)
		}
	}
	return out
}

// newApprovalStage builds the stage over the open store; it expires what
// passed its deadline while the broker was down. Pending approvals survive
// a restart: they stay requested, and a retry of the same call finds them.
func (b *Broker) newApprovalStage() (*approvalStage, error) {
	cfg := b.cfg.Approvals
	key, err := loadOrCreateKey(filepath.Join(b.cfg.DataDir, ApprovalKeyFile))
	if err != nil {
		return nil, fmt.Errorf("approval key: %w", err)
	}
	sealer, err := approval.NewSealer(key)
	if err != nil {
		return nil, err
	}
	st := &approvalStage{sealer: sealer, cfg: cfg, web: newWebSessions(cfg.webSessionTTL())}
	var errs []error
	for i, a := range cfg.Approvers {
		tok, err := SecretRef{Env: a.TokenEnv, File: a.TokenFile}.Resolve()
		if err != nil {
			errs = append(errs, fmt.Errorf("approvals.approvers[%d] (%s): %w", i, a.ID, err))
			continue
		}
		if len(tok) < 16 {
			errs = append(errs, fmt.Errorf("approvals.approvers[%d] (%s): token shorter than 16 characters", i, a.ID))
			continue
		}
		st.approvers = append(st.approvers, approverCred{id: a.ID, groups: a.Groups, initiators: a.Initiators, tenants: a.Tenants, hash: sha256.Sum256([]byte(tok))})
	}
	if w := cfg.Webhook; w != nil {
		sec, err := SecretRef{Env: w.SecretEnv, File: w.SecretFile}.Resolve()
		if err != nil {
			errs = append(errs, fmt.Errorf("approvals.webhook: %w", err))
		} else {
			st.webhook = &approval.Webhook{URL: w.URL, Secret: []byte(sec)}
			st.whTimeout = orDefault(w.Timeout, 10*time.Second)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	st.svc = approval.New(approval.Options{Store: b.store, Now: func() time.Time { return b.now() }, OnTransition: b.onApprovalTransition})
	if n, err := st.svc.Sweep(); err != nil {
		return nil, fmt.Errorf("approvals: %w", err)
	} else if n > 0 {
		b.log.Info("approvals expired while the broker was down", "count", n)
	}
	return st, nil
}

// loadOrCreateKey reads a 32-byte key, creating it (0600) if missing.
func loadOrCreateKey(path string) ([]byte, error) {
	if k, err := os.ReadFile(path); err == nil {
		if len(k) != 32 {
			return nil, fmt.Errorf("%s: %d bytes, want 32", path, len(k))
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return loadOrCreateKey(path)
	}
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(k); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return k, f.Close()
}

// planMode is which channels the policies that asked allow.
type planMode int

const (
	planAny       planMode = iota // @approval("required"): in band if possible, else out of band
	planInitiator                 // @approval("initiator"): in band only
	planApprover                  // @approval("approver:<group>"): out of band, by the group
)

// approvalPlan is what the policies that asked say about the approval.
type approvalPlan struct {
	mode      planMode
	groups    []string
	timeout   time.Duration
	scope     approval.Scope
	reason    string
	policyIDs []string
	digest    string
}

// planApproval decides c again (Cedar is pure and fast) to learn which
// policies asked, and reads their annotations. Any annotation it cannot
// read fails closed.
func (b *Broker) planApproval(c *call) (approvalPlan, error) {
	a := c.acting
	if a == nil {
		return approvalPlan{}, errors.New("call has no task or chain")
	}
	dec := b.engine.Decide(policies.Request{
		CallID: c.id, Action: policies.ActionCallTool, Initiator: a.initiator, Chain: b.policyChain(a),
		Target: c.target, Args: c.args.Fields, RiskTags: c.riskTags, Now: b.now(), Task: b.taskContext(a),
	})
	if dec.Outcome != policies.NeedsApproval {
		return approvalPlan{}, fmt.Errorf("decision is now %s", dec.Outcome)
	}
	set := b.engine.Set()
	p := approvalPlan{timeout: b.cfg.Approvals.timeout(), policyIDs: dec.PolicyIDs, digest: dec.Digest}
	initiatorOnly := false
	var policyTimeout time.Duration
	var scopes, reasons []string
	for _, id := range dec.PolicyIDs {
		info, ok := set.Policy(id)
		if !ok || info.Approval == "" {
			return p, fmt.Errorf("policy %s: not an @approval policy of the current set", id)
		}
		switch v := info.Approval; {
		case v == "initiator":
			initiatorOnly = true
		case strings.HasPrefix(v, "approver:"):
			if g := strings.TrimSpace(strings.TrimPrefix(v, "approver:")); !slices.Contains(p.groups, g) {
				p.groups = append(p.groups, g)
			}
		}
		if v, ok := info.Annotations[annApprovalTimeout]; ok {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second || d > 24*time.Hour {
				return p, fmt.Errorf("policy %s: @%s(%q) is not a duration between 1s and 24h", id, annApprovalTimeout, v)
			}
			if policyTimeout == 0 || d < policyTimeout {
				policyTimeout = d // the shortest of the policies' own timeouts
			}
		}
		sc := string(approval.ScopeOnce)
		if v, ok := info.Annotations[annApprovalScope]; ok {
			if err := approval.Scope(v).Validate(); err != nil {
				return p, fmt.Errorf("policy %s: @%s: %w", id, annApprovalScope, err)
			}
			sc = v
		}
		scopes = append(scopes, sc)
		if r := strings.TrimSpace(info.Annotations[annReason]); r != "" {
			reasons = append(reasons, r)
		} else {
			reasons = append(reasons, "policy "+id+" requires a human approval")
		}
	}
	if policyTimeout > 0 {
		p.timeout = policyTimeout
	}
	if len(p.groups) > 0 && initiatorOnly {
		return p, errors.New("policies disagree: one allows only the initiator, another names an approver group")
	}
	switch {
	case len(p.groups) > 0:
		p.mode = planApprover
	case initiatorOnly:
		p.mode = planInitiator
	}
	p.scope = approval.ScopeOnce
	if len(scopes) > 0 && scopes[0] != string(approval.ScopeOnce) && !slices.ContainsFunc(scopes, func(s string) bool { return s != scopes[0] }) {
		p.scope = approval.Scope(scopes[0])
	}
	slices.Sort(reasons)
	p.reason = strings.Join(slices.Compact(reasons), "; ")
	slices.Sort(p.groups) // as records store them
	return p, nil
}

// sessionKey is the session an approval scope binds to: the transport
// session (2025-11-25), or for 2026-07-28 requests, which have none, the
// identity and task (DESIGN.md: the session is found from agent,
// initiator and task).
func (c *call) sessionKey() string {
	if c.session != "" {
		return c.session
	}
	return "stateless:" + approval.Who(c.identity.Key())[:32] + ":" + c.taskID()
}

// approvalUse is c as the approval service sees it.
func (b *Broker) approvalUse(c *call) approval.Use {
	return approval.Use{CallID: c.id, CallDigest: b.callDigest(c), Session: c.sessionKey(), Task: c.taskID(),
		Tool: c.target.Exposed, Initiator: c.initiatorID(), Chain: c.chain()}
}

// callDigest binds an approval to the exact call: tool, canonical
// arguments, session, chain, initiator and task, under the deployment key.
func (b *Broker) callDigest(c *call) string {
	v, _ := json.Marshal(struct {
		V         int             `json:"v"`
		Server    string          `json:"server"`
		Tool      string          `json:"tool"`
		Args      json.RawMessage `json:"args"`
		Session   string          `json:"session"`
		Chain     []string        `json:"chain"`
		Initiator string          `json:"initiator"`
		Tenant    string          `json:"tenant"`
		Task      string          `json:"task"`
	}{1, c.target.Server, c.target.Exposed, json.RawMessage(c.args.Canonical), c.sessionKey(), c.chain(), c.initiatorID(), c.tenant(), c.taskID()})
	return b.hasher.Digest(v)
}

// approveCall obtains a human decision for c, which policy says needs one.
// It returns either an answer the agent must get first (pending: the
// input_required elicitation of a 2026-07-28 agent), or the approval to
// decide again with (granted), or a refusal reason. Every failure denies.
func (b *Broker) approveCall(ctx context.Context, c *call, req mcp.CallToolRequest) (pending *mcp.CallToolResult, granted *policies.Approval, reason Reason) {
	st := b.approvals
	log := b.log.With("call_id", c.id, "tool", c.target.Exposed, "agent", c.identity.Agent)
	if st == nil {
		return nil, nil, ReasonApprovalRequired
	}
	plan, err := b.planApproval(c)
	if err != nil {
		log.Error("approval refused: policy annotations", "err", err)
		b.recordApprovalRefusal(ctx, c, "", ReasonApprovalRequired, err.Error())
		return nil, nil, ReasonApprovalRequired
	}
	use := b.approvalUse(c)
	use.Asked = &approval.Asked{PolicyIDs: plan.policyIDs, Group: strings.Join(plan.groups, ","), Scope: plan.scope}
	if plan.mode == planInitiator {
		use.Asked.Mode = approval.ModeInitiator
	}
	// An approval that already covers this call: a live session or task
	// grant, or a once approval for this very call decided while it was
	// away (for example across a restart).
	if r, err := st.svc.Covering(use); err == nil {
		log.Info("call covered by an earlier approval", "approval", r.ID, "scope", r.Scope, "approver", r.Approver)
		return nil, &policies.Approval{Granted: true, Approver: r.Approver, CallID: c.id, ID: r.ID, Channel: string(r.Channel)}, ""
	}
	if plan.mode != planApprover {
		// Asking in band needs the agent's session (its capabilities,
		// and the elicitation): a fast-lane call is handed to mcp-go now,
		// and only now.
		if sctx, err := sessionCtx(ctx); err == nil {
			ctx = sctx
		}
	}
	direct := directToInitiator(c)
	inBand := plan.mode != planApprover && direct && canElicit(ctx)
	if plan.mode == planInitiator && !inBand {
		why := "only the initiator may approve (in band) and the agent did not declare elicitation"
		if !direct {
			why = "only the initiator may approve (in band), and this agent does not answer to a human initiator directly (a sub-agent, or an agent acting for itself)"
		}
		log.Info("approval impossible", "why", why)
		b.recordApprovalRefusal(ctx, c, "", ReasonApprovalRequired, why)
		return nil, nil, ReasonApprovalRequired
	}
	if inBand {
		return b.askInBand(ctx, c, plan, use)
	}
	granted, reason = b.askOutOfBand(ctx, c, req, plan, use)
	return nil, granted, reason
}

// directToInitiator reports whether an in-band prompt from c's agent can
// reach its initiator: the initiator is a user, and the agent is the first
// on its chain (its client is the user's). A sub-agent's client, or an
// agent acting for itself, would answer its own prompt, so those calls are
// approved out of band.
func directToInitiator(c *call) bool {
	a := c.acting
	return a != nil && len(a.chain) == 0 && a.initiator.Kind == policies.InitiatorUser
}

// canElicit reports whether the agent declared form-mode elicitation.
func canElicit(ctx context.Context) bool {
	formOK := func(e *mcp.ElicitationCapability) bool { return e != nil && (e.Form != nil || e.URL == nil) }
	if info := server.RequestProtocolInfoFromContext(ctx); info != nil && info.Modern {
		return info.ClientCapabilities != nil && formOK(info.ClientCapabilities.Elicitation)
	}
	if s, ok := server.ClientSessionFromContext(ctx).(server.SessionWithClientInfo); ok {
		caps := s.GetClientCapabilities()
		return formOK(caps.Elicitation)
	}
	return false
}

// requestApproval stores a new approval for c and records
// approval.requested; if that record cannot be written the approval is
// cancelled and the call refused.
func (b *Broker) requestApproval(ctx context.Context, c *call, plan approvalPlan, asked approval.Channel, mode approval.Mode, use approval.Use) (*approval.Record, error) {
	now := b.now()
	rec := approval.Record{
		CallID: c.id, Session: use.Session, Agent: c.identity.Agent, Chain: c.chain(), Initiator: c.initiatorID(),
		Tenant: c.tenant(), Task: c.taskID(), Server: c.target.Server, Tool: c.target.Exposed,
		ArgsDigest: b.hasher.Digest(c.args.Canonical), CallDigest: use.CallDigest, Summary: summarizeArgs(c.args.Canonical, b.classes[c.target.Server][c.target.Name]),
		Reason: plan.reason, PolicyIDs: plan.policyIDs, PolicyDigest: plan.digest, Mode: mode, Group: strings.Join(plan.groups, ","),
		Asked: asked, Scope: plan.scope, RequestedAt: now, ExpiresAt: now.Add(plan.timeout),
	}
	if plan.scope != approval.ScopeOnce {
		rec.ScopeTTL = approval.Duration(b.cfg.Approvals.scopeTTL())
	}
	if c.acting != nil && c.acting.task != nil {
		rec.TaskPurpose = c.acting.task.Purpose
	}
	rec.Prompt = approvalPrompt(&rec)
	r, err := b.approvals.svc.Request(rec)
	if err != nil {
		return nil, err
	}
	ev := b.approvalEvent(r, audit.ApprovalRequested)
	ev.Decision = audit.DecisionNeedsApproval
	ev.Args = audit.Classify(b.hasher, b.classes[c.target.Server][c.target.Name], c.args.Fields)
	ev.Detail = fmt.Sprintf("approval %s asked %s (mode %s%s, scope %s, until %s)", r.ID, r.Asked, r.Mode,
		groupSuffix(r.Group), r.Scope, r.ExpiresAt.UTC().Format(time.RFC3339))
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := b.ledger.Record(wctx, ev); err != nil {
		_, _ = b.approvals.svc.Cancel(r.ID, "approval.requested record not written")
		return nil, fmt.Errorf("record approval.requested: %w", err)
	}
	b.log.Info("approval requested", "approval", r.ID, "call_id", c.id, "tool", r.Tool, "asked", r.Asked, "mode", r.Mode,
		"group", r.Group, "expires_at", r.ExpiresAt)
	return r, nil
}

func groupSuffix(g string) string {
	if g == "" {
		return ""
	}
	return ", group " + g
}

// approvalSchema is the form the human fills in.
var approvalSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"decision": map[string]any{"type": "string", "title": "Decision", "enum": []string{"approve", "deny"},
			"enumNames": []string{"Approve this call", "Deny it"}},
		"comment": map[string]any{"type": "string", "title": "Comment (optional)", "maxLength": approval.MaxComment},
	},
	"required": []string{"decision"},
}

// askInBand asks the initiator through elicitation.
func (b *Broker) askInBand(ctx context.Context, c *call, plan approvalPlan, use approval.Use) (*mcp.CallToolResult, *policies.Approval, Reason) {
	st := b.approvals
	rec, err := b.requestApproval(ctx, c, plan, approval.ChannelElicitation, approval.ModeInitiator, use)
	if err != nil {
		b.log.Error("approval not requested", "call_id", c.id, "err", err)
		return nil, nil, ReasonInternal
	}
	params := mcp.ElicitationParams{Message: rec.Prompt, RequestedSchema: approvalSchema}
	if server.IsModernRequest(ctx) {
		state := st.sealer.Seal(approval.Claims{Approval: rec.ID, Who: approval.Who(c.identity.Key()), Digest: use.CallDigest, Exp: rec.ExpiresAt.Unix()})
		return server.NewInputRequestBuilder(state).Elicit(elicitKey, params).ToolResult(), nil, ""
	}
	b.watchShutdown(ctx)
	ectx, cancel := context.WithTimeout(ctx, rec.ExpiresAt.Sub(b.now()))
	defer cancel()
	res, err := b.mcp.RequestElicitation(ectx, mcp.ElicitationRequest{Params: params})
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return nil, nil, b.agentGone(c, rec.ID)
		case ectx.Err() != nil:
			_, _ = st.svc.Expire(rec.ID, "no answer to the elicitation before the deadline")
			return nil, nil, ReasonApprovalTimeout
		}
		_, _ = st.svc.Cancel(rec.ID, "elicitation failed: "+truncate(err.Error(), 200))
		b.log.Warn("approval elicitation failed", "call_id", c.id, "approval", rec.ID, "err", err)
		return nil, nil, ReasonApprovalRequired
	}
	g, r := b.applyAnswer(ctx, c, rec.ID, res, use)
	return nil, g, r
}

// agentGone cancels the approval of a call whose agent went away, unless
// the broker itself is stopping: then it stays pending for after the
// restart.
func (b *Broker) agentGone(c *call, id string) Reason {
	if b.approvals.stopping.Load() {
		b.log.Info("broker stopping: approval stays pending", "approval", id, "call_id", c.id)
		return ReasonCancelled
	}
	if _, err := b.approvals.svc.Cancel(id, "the agent went away"); err == nil {
		b.log.Info("approval cancelled: the agent went away", "approval", id, "call_id", c.id)
	}
	return ReasonCancelled
}

// watchShutdown learns when the HTTP server serving ctx starts to shut
// down, so that calls cancelled by the shutdown leave their approvals
// pending instead of cancelled.
func (b *Broker) watchShutdown(ctx context.Context) {
	srv, ok := ctx.Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return
	}
	if _, loaded := b.approvals.watched.LoadOrStore(srv, true); !loaded {
		srv.RegisterOnShutdown(func() { b.approvals.stopping.Store(true) })
	}
}

// applyAnswer turns the initiator's elicitation answer into a decision on
// approval id and, if approved, uses it for c.
func (b *Broker) applyAnswer(ctx context.Context, c *call, id string, ans *mcp.ElicitationResult, use approval.Use) (*policies.Approval, Reason) {
	svc := b.approvals.svc
	if ans == nil {
		b.recordApprovalRefusal(ctx, c, id, ReasonApprovalDenied, "retry carried no answer to the approval question")
		return nil, ReasonApprovalDenied
	}
	by := approval.Approver{ID: c.initiatorID()}
	switch ans.Action {
	case mcp.ElicitationResponseActionAccept:
		decision, comment := readAnswer(ans.Content)
		if decision != "approve" && decision != "deny" {
			b.recordApprovalRefusal(ctx, c, id, ReasonApprovalDenied, "answer is neither approve nor deny")
			decision = "deny"
		}
		if _, err := svc.Decide(id, approval.Decision{Approve: decision == "approve", By: by, Channel: approval.ChannelElicitation, Comment: comment}); err != nil {
			return nil, b.approvalFailed(ctx, c, id, err)
		}
		if decision != "approve" {
			return nil, ReasonApprovalDenied
		}
	case mcp.ElicitationResponseActionDecline:
		if _, err := svc.Decide(id, approval.Decision{Approve: false, By: by, Channel: approval.ChannelElicitation, Comment: "declined"}); err != nil {
			return nil, b.approvalFailed(ctx, c, id, err)
		}
		return nil, ReasonApprovalDenied
	default: // cancel, or anything else
		if _, err := svc.Cancel(id, "the initiator dismissed the prompt"); err != nil {
			return nil, b.approvalFailed(ctx, c, id, err)
		}
		return nil, ReasonCancelled
	}
	r, err := svc.Consume(id, use)
	if err != nil {
		return nil, b.approvalFailed(ctx, c, id, err)
	}
	return &policies.Approval{Granted: true, Approver: r.Approver, CallID: c.id, ID: r.ID, Channel: string(r.Channel)}, ""
}

func readAnswer(content any) (decision, comment string) {
	m, ok := content.(map[string]any)
	if !ok {
		if raw, err := json.Marshal(content); err == nil {
			_ = json.Unmarshal(raw, &m)
		}
	}
	decision, _ = m["decision"].(string)
	comment, _ = m["comment"].(string)
	if v, ok := m["approve"].(bool); ok && decision == "" {
		decision = map[bool]string{true: "approve", false: "deny"}[v]
	}
	return strings.ToLower(strings.TrimSpace(decision)), comment
}

// approvalFailed records a refused approval step and maps it to a reason.
func (b *Broker) approvalFailed(ctx context.Context, c *call, id string, err error) Reason {
	reason := ReasonApprovalDenied
	switch {
	case errors.Is(err, approval.ErrExpired):
		reason = ReasonApprovalTimeout
	case errors.Is(err, approval.ErrNotPending), errors.Is(err, approval.ErrNotCovered),
		errors.Is(err, approval.ErrSeparation), errors.Is(err, approval.ErrWrongChannel), errors.Is(err, approval.ErrNotInGroup):
	default:
		reason = ReasonInternal
	}
	b.log.Warn("approval refused", "call_id", c.id, "approval", id, "reason", reason, "err", err)
	b.recordApprovalRefusal(ctx, c, id, reason, err.Error())
	return reason
}

// recordApprovalRefusal writes an approval.decided deny for a refused
// approval step (replay, forgery, expiry, other call) of call c.
func (b *Broker) recordApprovalRefusal(ctx context.Context, c *call, id string, reason Reason, detail string) {
	ev := audit.Event{Type: audit.ApprovalDecided, CallID: c.id, Session: c.session, Agent: c.identity.Agent,
		Initiator: c.initiatorID(), Tenant: c.tenant(), Chain: c.chain(), Task: c.taskID(), Method: "tools/call",
		Server: c.target.Server, Target: c.target.Exposed, Decision: audit.DecisionDeny, Reason: string(reason),
		Detail: truncate("approval "+orDash(id)+" refused: "+detail, 500)}
	if c.args.Canonical != nil {
		ev.ArgsDigest = b.hasher.Digest(c.args.Canonical)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	b.record(wctx, ev)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// askOutOfBand waits for an approver. The agent's stream is kept alive
// with progress notifications when it sent a progress token.
func (b *Broker) askOutOfBand(ctx context.Context, c *call, req mcp.CallToolRequest, plan approvalPlan, use approval.Use) (*policies.Approval, Reason) {
	st := b.approvals
	rec, ok := st.svc.Pending(use.CallDigest)
	if ok {
		b.log.Info("call waits on an approval already pending for it", "call_id", c.id, "approval", rec.ID)
	} else {
		var err error
		if rec, err = b.requestApproval(ctx, c, plan, approval.ChannelOutOfBand, approval.ModeApprover, use); err != nil {
			b.log.Error("approval not requested", "call_id", c.id, "err", err)
			return nil, ReasonInternal
		}
	}
	b.watchShutdown(ctx)
	var token mcp.ProgressToken
	if req.Params.Meta != nil {
		token = req.Params.Meta.ProgressToken
	}
	tick := time.NewTicker(st.cfg.progressInterval())
	defer tick.Stop()
	deadline := time.NewTimer(rec.ExpiresAt.Sub(b.now()))
	defer deadline.Stop()
	sent := 0
	for {
		changed := st.svc.Changed(rec.ID)
		r, err := st.svc.Get(rec.ID)
		if err != nil {
			b.log.Error("approval unreadable", "approval", rec.ID, "err", err)
			return nil, ReasonInternal
		}
		switch r.State {
		case approval.Approved:
			r, err := st.svc.Consume(r.ID, use)
			if err != nil {
				return nil, b.approvalFailed(ctx, c, rec.ID, err)
			}
			return &policies.Approval{Granted: true, Approver: r.Approver, CallID: c.id, ID: r.ID, Channel: string(r.Channel)}, ""
		case approval.Denied:
			return nil, ReasonApprovalDenied
		case approval.Expired:
			return nil, ReasonApprovalTimeout
		case approval.Cancelled:
			return nil, ReasonCancelled
		case approval.Consumed:
			b.recordApprovalRefusal(ctx, c, r.ID, ReasonApprovalDenied, "already consumed by another call")
			return nil, ReasonApprovalDenied
		}
		select {
		case <-changed:
		case <-tick.C:
			if token != nil {
				sent++
				_ = b.mcp.SendNotificationToClient(ctx, "notifications/progress", map[string]any{
					"progressToken": token, "progress": sent,
					"message": fmt.Sprintf("waiting for approval %s (until %s)", r.ID, r.ExpiresAt.UTC().Format(time.RFC3339)),
				})
			}
		case <-deadline.C:
			_, _ = st.svc.Expire(r.ID, "no decision before the deadline")
		case <-ctx.Done():
			return nil, b.agentGone(c, r.ID)
		}
	}
}

// resumeApproval continues a call after a 2026-07-28 agent answered the
// approval elicitation: a retry carrying the sealed requestState. The retry
// is admitted like any call; the state must open (broker key, same
// identity, not expired), name a pending approval, and match the retry's
// call digest. Forged, altered, expired, replayed or misapplied states deny
// and are recorded.
func (b *Broker) resumeApproval(ctx context.Context, req mcp.CallToolRequest, t tools.Tool) (*mcp.CallToolResult, error) {
	id, ok := agents.FromContext(ctx)
	if !ok {
		return refusal(ReasonUnauthenticated, ""), nil
	}
	st := b.approvals
	if st == nil {
		return refusal(ReasonApprovalRequired, ""), nil
	}
	claims, stateErr := st.sealer.Open(req.Params.RequestState, approval.Who(id.Key()), b.now())
	if stateErr != nil && !errors.Is(stateErr, approval.ErrStateExpired) {
		b.record(context.WithoutCancel(ctx), audit.Event{Type: audit.RequestRejected, Agent: id.Agent, Initiator: id.Initiator, Tenant: id.Tenant,
			Method: "tools/call", Target: req.Params.Name, Decision: audit.DecisionDeny, Reason: string(ReasonApprovalDenied),
			Detail: "approval answer refused: " + stateErr.Error()})
		b.log.Warn("approval requestState refused", "agent", id.Agent, "tool", req.Params.Name, "err", stateErr)
		return refusal(ReasonApprovalDenied, ""), nil
	}
	raw := req.Params.RawArguments
	if raw == nil && req.Params.Arguments != nil {
		raw, _ = json.Marshal(req.Params.Arguments)
	}
	target := toolTarget(t)
	target.Unpinned = b.isUnpinned(t.Server, t.Name) // as toolHandler: a rug-pulled tool stays refused
	c, reason := b.admit(ctx, "tools/call", policies.ActionCallTool, target, raw, req.Params.Meta)
	if stateErr != nil {
		if _, err := st.svc.Expire(claims.Approval, "answer after the deadline"); err != nil && !errors.Is(err, approval.ErrNotPending) {
			b.log.Warn("approval not expired", "approval", claims.Approval, "err", err)
		}
		b.recordApprovalRefusal(ctx, c, claims.Approval, ReasonApprovalTimeout, "answer after the deadline")
		return refusal(ReasonApprovalTimeout, c.id), nil
	}
	switch reason {
	case "":
		// Policy no longer asks for approval: the question is moot.
		_, _ = st.svc.Cancel(claims.Approval, "no longer needed: policy allows the call")
		return b.forwardTool(ctx, c, t, raw, req.Params.Meta), nil
	case ReasonApprovalRequired:
	default:
		return refusal(reason, c.id), nil
	}
	use := b.approvalUse(c)
	if use.CallDigest != claims.Digest {
		b.recordApprovalRefusal(ctx, c, claims.Approval, ReasonApprovalDenied,
			"answer presented for a different call (tool, arguments, session or chain differ)")
		return refusal(ReasonApprovalDenied, c.id), nil
	}
	granted, reason := b.applyAnswer(ctx, c, claims.Approval, server.ElicitationResponse(req.Params.InputResponses, elicitKey), use)
	if reason == "" {
		reason = b.readmit(ctx, c, granted)
	}
	if reason != "" {
		return refusal(reason, c.id), nil
	}
	return b.forwardTool(ctx, c, t, raw, req.Params.Meta), nil
}

// toolTarget is the policy target of a catalog tool (as toolHandler builds it).
func toolTarget(t tools.Tool) policies.Target {
	return policies.Target{
		Kind: policies.TargetTool, Server: t.Server, Name: t.Name, Exposed: t.Exposed,
		ReadOnly: t.ReadOnly, Destructive: t.Destructive, Idempotent: t.Idempotent, OpenWorld: t.OpenWorld,
		RiskTags: t.RiskTags,
	}
}

// approvalEvent is the audit event describing approval r.
func (b *Broker) approvalEvent(r *approval.Record, typ audit.Type) audit.Event {
	return audit.Event{Type: typ, CallID: r.CallID, Session: r.Session, Agent: r.Agent, Initiator: r.Initiator,
		Tenant: r.Tenant, Chain: r.Chain, Task: r.Task, Method: "tools/call", Server: r.Server, Target: r.Tool,
		ArgsDigest: r.ArgsDigest, PolicyIDs: r.PolicyIDs, PolicyDigest: r.PolicyDigest}
}

// onApprovalTransition records decisions, expiries, cancellations and uses
// in the audit trail and notifies the webhook. approval.requested is
// recorded by requestApproval, which knows the arguments.
func (b *Broker) onApprovalTransition(r *approval.Record, t approval.Transition) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ev, ok := approvalTransitionEvent(r, t); ok {
		b.record(ctx, ev)
	}
	if r.Asked != approval.ChannelOutOfBand {
		return
	}
	switch {
	case t.To == approval.Requested:
		b.notifyWebhook("approval.requested", r)
	case t.From == approval.Requested:
		b.notifyWebhook("approval.decided", r)
	}
}

// approvalTransitionEvent is the audit event for transition t of r: an
// approval.decided for every change after the request (decision, expiry,
// cancellation, use).
func approvalTransitionEvent(r *approval.Record, t approval.Transition) (audit.Event, bool) {
	if t.To == approval.Requested {
		return audit.Event{}, false
	}
	ev := audit.Event{Type: audit.ApprovalDecided, CallID: r.CallID, Session: r.Session, Agent: r.Agent, Initiator: r.Initiator,
		Tenant: r.Tenant, Chain: r.Chain, Task: r.Task, Method: "tools/call", Server: r.Server, Target: r.Tool,
		ArgsDigest: r.ArgsDigest, PolicyIDs: r.PolicyIDs, PolicyDigest: r.PolicyDigest, Decision: audit.DecisionDeny}
	switch t.To {
	case approval.Approved:
		ev.Decision = audit.DecisionAllow
		ev.Detail = fmt.Sprintf("approval %s approved by %s via %s", r.ID, t.By, t.Channel)
		if t.From == approval.Approved {
			ev.CallID = t.CallID
			ev.Detail = fmt.Sprintf("approval %s (scope %s, approved by %s) used by call %s", r.ID, r.Scope, r.Approver, t.CallID)
		}
	case approval.Consumed:
		ev.Decision = audit.DecisionAllow
		ev.CallID = t.CallID
		ev.Detail = fmt.Sprintf("approval %s (approved by %s) consumed by call %s", r.ID, r.Approver, t.CallID)
	case approval.Denied:
		ev.Reason = string(ReasonApprovalDenied)
		ev.Detail = fmt.Sprintf("approval %s denied by %s via %s", r.ID, t.By, t.Channel)
	case approval.Expired:
		ev.Reason = string(ReasonApprovalTimeout)
		ev.Detail = fmt.Sprintf("approval %s expired: %s", r.ID, t.Note)
	case approval.Cancelled:
		ev.Reason = string(ReasonCancelled)
		ev.Detail = fmt.Sprintf("approval %s cancelled: %s", r.ID, t.Note)
	}
	return ev, true
}

// notifyWebhook posts a signed notification without holding up the call;
// each send is bounded by the webhook timeout.
func (b *Broker) notifyWebhook(event string, r *approval.Record) {
	st := b.approvals
	if st == nil || st.webhook == nil {
		return
	}
	n := approval.Notification{Event: event, Time: b.now().UTC(), Approval: r}
	if u := st.cfg.PublicURL; u != "" {
		n.URL = strings.TrimRight(u, "/") + "/approvals/" + r.ID
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), st.whTimeout)
		defer cancel()
		if err := st.webhook.Send(ctx, n, b.now()); err != nil {
			b.log.Warn("approval webhook failed", "approval", r.ID, "event", event, "err", err)
		}
	}()
}

// summarizeArgs is the readable, redacted summary of canonical arguments
// shown to the human: one line per field (nested objects flattened to
// dotted paths), long values cut, and redacted: fields the server's
// classify rules call secret (an object so classified, whole), and, where
// no rule says otherwise, secret-looking names. Sensitive fields are shown:
// the human must see what they approve (and the approvals store keeps
// what was shown).
func summarizeArgs(canonical []byte, rules audit.Classes) []approval.Field {
	var m map[string]any
	if err := json.Unmarshal(canonical, &m); err != nil {
		return nil
	}
	var out []approval.Field
	var walk func(prefix string, m map[string]any, depth int, secret bool)
	walk = func(prefix string, m map[string]any, depth int, secret bool) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			path := k
			if prefix != "" {
				path = prefix + "." + k
			}
			class, explicit := rules[path]
			sec := secret || explicit && class != audit.Public && class != audit.Sensitive || !explicit && audit.IsSecretName(k)
			if sub, ok := m[k].(map[string]any); ok && depth < 4 && !(explicit && sec) {
				walk(path, sub, depth+1, sec)
				continue
			}
			v := audit.Redacted
			if !sec {
				if s, ok := m[k].(string); ok {
					v = s
				} else {
					b, _ := json.Marshal(m[k])
					v = string(b)
				}
			}
			out = append(out, approval.Field{Name: visible(path), Value: shown(visible(v), 500)})
		}
	}
	walk("", m, 0, false)
	return out
}

// visible writes out what a prompt must not interpret: control characters
// (a newline could fake a line of the prompt), line and paragraph
// separators, and bidirectional overrides (which reorder what is shown),
// each as a \u escape (newline and tab as \n and \t).
func visible(s string) string {
	hidden := func(r rune) bool {
		return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || r == '\u200e' || r == '\u200f' ||
			r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069'
	}
	if !strings.ContainsFunc(s, hidden) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case hidden(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// shown cuts s to about n bytes (at a rune boundary) and says how much
// was left out, so that the human knows they do not see all of it.
func shown(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… [%d more bytes not shown]", s[:cut], len(s)-cut)
}

// approvalPrompt is the exact text shown to the human.
func approvalPrompt(r *approval.Record) string {
	var s strings.Builder
	fmt.Fprintf(&s, "mcpbroker asks for your approval.\n\nAgent %s wants to call %s on server %s.\n", r.Agent, r.Tool, r.Server)
	if len(r.Summary) == 0 {
		s.WriteString("Arguments: none\n")
	} else {
		s.WriteString("Arguments:\n")
		for _, f := range r.Summary {
			fmt.Fprintf(&s, "  %s: %s\n", f.Name, f.Value)
		}
	}
	fmt.Fprintf(&s, "Chain: %s\n", chainString(r.Chain))
	if r.Task != "" {
		purpose := r.TaskPurpose
		if purpose == "" {
			purpose = "(no purpose given)"
		}
		fmt.Fprintf(&s, "Task: %s (%s)\n", purpose, r.Task)
	}
	fmt.Fprintf(&s, "On behalf of: %s\n", r.Initiator)
	fmt.Fprintf(&s, "Why: %s [%s]\n", r.Reason, strings.Join(r.PolicyIDs, ", "))
	switch r.Scope {
	case approval.ScopeSession:
		fmt.Fprintf(&s, "Approving covers this tool for the rest of the session (%s).\n", time.Duration(r.ScopeTTL))
	case approval.ScopeTask:
		fmt.Fprintf(&s, "Approving covers this tool for the rest of the task (%s).\n", time.Duration(r.ScopeTTL))
	default:
		s.WriteString("Approving covers this one call only.\n")
	}
	fmt.Fprintf(&s, "Answer before %s.", r.ExpiresAt.UTC().Format(time.RFC3339))
	return s.String()
}
