package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/broker/store"
	"github.com/mcpbroker/mcpbroker/policies"
	"github.com/mcpbroker/mcpbroker/tools"
)

// Where an agent presents its task handle and a chain token.
const (
	HeaderTask  = "Mcp-Broker-Task"
	HeaderChain = "Mcp-Broker-Chain"
	MetaTask    = "io.mcpbroker/task"
	MetaChain   = "io.mcpbroker/chain"
)

// The broker's own tools, exposed to agents under the "broker" server.
const (
	brokerServer = "broker"
	toolDelegate = "broker__delegate"
	toolTask     = "broker__task"
)

type presentedKey struct{}

// presented is what an HTTP request carried besides its credential.
type presented struct {
	task, chain string
}

func withPresented(ctx context.Context, r *http.Request) context.Context {
	p := presented{task: r.Header.Get(HeaderTask), chain: r.Header.Get(HeaderChain)}
	if p == (presented{}) {
		return ctx
	}
	return context.WithValue(ctx, presentedKey{}, p)
}

// acting is who a call is made by and for, after task and chain resolution.
type acting struct {
	agent     agents.Identity
	initiator policies.Initiator
	chain     []string // agents upstream of the acting one, outermost first
	task      *agents.Task
	// limit narrows the task further for a chained call: the sub-agent's
	// own default task patterns (task ∩ what the sub-agent may do).
	limit []string
	// own is that default task itself (for the chain's initiator): its
	// budget is charged too, so a sub-agent stays within its own calls.
	own *agents.Task
	// chainCall is the parent call of a chained call.
	chainCall string
}

// fullChain is every agent on the chain, the acting one last.
func (a *acting) fullChain() []string {
	return append(slices.Clone(a.chain), a.agent.Agent)
}

// policyChain is the chain as Cedar principals, with registry classes.
func (b *Broker) policyChain(a *acting) []policies.Agent {
	out := make([]policies.Agent, 0, len(a.chain)+1)
	for _, id := range a.fullChain() {
		var classes []string
		if reg, ok := b.cfg.agent(id); ok {
			classes = reg.Classes
		} else if len(b.cfg.Agents) > 0 {
			classes = []string{"unregistered"}
		}
		out = append(out, policies.Agent{ID: id, Classes: classes})
	}
	return out
}

// allowsTool applies the task boundary (and a chain's extra limit) to a
// tool name agents see. The broker's own tools are always inside: they are
// bounded by narrowing instead.
func (a *acting) allowsTool(name string) bool {
	if name == toolDelegate || name == toolTask {
		return true
	}
	if a.task != nil && !a.task.AllowsTool(name) {
		return false
	}
	// A chained sub-agent stays inside its own default task too, even
	// when its caller has no task.
	if len(a.limit) > 0 {
		lt := agents.Task{Tools: a.limit}
		return lt.AllowsTool(name)
	}
	return true
}

// allowsServer reports whether a's task (and a chain's limit) lets it use
// server's resources and prompts: when some tool of server is inside. With
// no task and no limit, every server is. The broker's own server always is.
func (b *Broker) allowsServer(a *acting, server string) bool {
	servers := b.allowedServers(a)
	return servers == nil || server == brokerServer || servers[server]
}

// allowedServers is the set of servers some tool of which a's task (and a
// chain's limit) allows, or nil when nothing bounds a. One pass over the
// catalog: a listing computes it once, not per entry.
func (b *Broker) allowedServers(a *acting) map[string]bool {
	all := func(patterns []string) bool { return patterns == nil || slices.Contains(patterns, "*") }
	var taskTools []string
	if a.task != nil {
		taskTools = a.task.Tools
	}
	if all(taskTools) && all(a.limit) {
		return nil // a task of every tool reaches every server, those with no tools too
	}
	out := map[string]bool{}
	for _, t := range b.pool.Snapshot().Tools {
		if !out[t.Server] && a.allowsTool(t.Exposed) {
			out[t.Server] = true
		}
	}
	return out
}

// allowsResource applies the task's resource URI patterns (if it has any)
// to a resources/read.
func (a *acting) allowsResource(uri string) bool {
	if a.task == nil || len(a.task.Resources) == 0 {
		return true
	}
	for _, p := range a.task.Resources {
		if ok, _ := path.Match(p, uri); ok || p == uri {
			return true
		}
	}
	return false
}

// sessionTasks binds legacy sessions to the task first presented in them:
// persisted through agents.Sessions for the sessions it issued (so a
// restart keeps the binding), in memory for the others (stdio).
type sessionTasks struct {
	sessions *agents.Sessions
	mu       sync.Mutex
	m        map[string]string
}

func (s *sessionTasks) bind(session, task string) error {
	if session == "" {
		return nil
	}
	if s.sessions != nil {
		err := s.sessions.BindTask(session, task)
		if !errors.Is(err, agents.ErrUnknownSession) {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]string{}
	}
	if cur, ok := s.m[session]; ok && cur != task {
		return fmt.Errorf("%w: session is bound to task %s", agents.ErrOutsideTask, cur)
	}
	s.m[session] = task
	return nil
}

// forget drops the in-memory binding of a session that ended (persisted
// bindings end with their session).
func (s *sessionTasks) forget(session string) {
	s.mu.Lock()
	delete(s.m, session)
	s.mu.Unlock()
}

func (s *sessionTasks) get(session string) string {
	if s.sessions != nil {
		if t := s.sessions.Task(session); t != "" {
			return t
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[session]
}

// resolve works out for whom and within which task a request acts: from a
// chain token, a task handle, the task bound to the session, or the agent's
// default task. It never widens: a chain token and a handle are each
// verified against the presenting agent.
func (b *Broker) resolve(ctx context.Context, id agents.Identity, session string, meta *mcp.Meta) (*acting, error) {
	p, _ := ctx.Value(presentedKey{}).(presented)
	if meta != nil {
		if v, ok := meta.AdditionalFields[MetaTask].(string); ok && p.task == "" {
			p.task = v
		}
		if v, ok := meta.AdditionalFields[MetaChain].(string); ok && p.chain == "" {
			p.chain = v
		}
	}
	if len(b.cfg.Agents) > 0 && !b.cfg.Identity.AdmitUnregistered {
		if _, ok := b.cfg.agent(id.Agent); !ok {
			return nil, fmt.Errorf("%w: %s is not in the agents registry", errUnregistered, id.Agent)
		}
	}
	a := &acting{agent: id, initiator: policies.Initiator{
		Kind: policies.InitiatorKind(id.InitiatorKind), ID: id.Initiator, Tenant: id.Tenant, Groups: id.Groups,
	}}
	now := b.now()
	switch {
	case p.chain != "":
		cl, err := b.chains.Verify(p.chain, id.Agent, now)
		if err != nil {
			return nil, err
		}
		a.initiator = policies.Initiator{Kind: policies.InitiatorKind(cl.InitiatorKind), ID: cl.Initiator, Tenant: cl.Tenant, Groups: cl.Groups}
		a.chain = cl.Chain
		a.chainCall = cl.ParentCall
		if cl.Task != "" {
			t, err := b.tasks.Get(cl.Task)
			if err != nil {
				return nil, err
			}
			if err := b.tasks.Check(t); err != nil {
				return nil, err
			}
			a.task = t
		}
		if reg, ok := b.cfg.agent(id.Agent); ok && reg.DefaultTask != nil {
			a.limit = reg.DefaultTask.Tools
			own, err := b.defaultTask(agents.Identity{Agent: id.Agent, Initiator: cl.Initiator, InitiatorKind: cl.InitiatorKind,
				Tenant: cl.Tenant, Groups: cl.Groups})
			if err != nil {
				return nil, err
			}
			a.own = own
		}
	case p.task != "":
		t, err := b.tasks.Resolve(p.task, id.Agent)
		if err != nil {
			return nil, err
		}
		// A handle acts for its task's initiator. An agent that
		// authenticated as itself (a workload, with no initiator token)
		// takes that initiator from the handle; one that authenticated
		// on someone's behalf may present only a handle for that same
		// initiator and tenant.
		if !(id.InitiatorKind == agents.InitiatorWorkload && id.Initiator == id.Agent) &&
			(t.InitiatorKind != id.InitiatorKind || t.Initiator != id.Initiator || t.Tenant != id.Tenant) {
			return nil, fmt.Errorf("%w: task %s is for %s %q in tenant %q, presented on behalf of %s %q in tenant %q",
				agents.ErrOutsideTask, t.ID, t.InitiatorKind, t.Initiator, t.Tenant, id.InitiatorKind, id.Initiator, id.Tenant)
		}
		if err := b.sessionTasks.bind(session, t.ID); err != nil {
			return nil, err
		}
		a.task, a.chain = t, t.Chain
		a.initiator = policies.Initiator{Kind: policies.InitiatorKind(t.InitiatorKind), ID: t.Initiator, Tenant: t.Tenant, Groups: t.Groups}
	case session != "" && b.sessionTasks.get(session) != "":
		t, err := b.tasks.Get(b.sessionTasks.get(session))
		if err != nil {
			return nil, err
		}
		if err := b.tasks.Check(t); err != nil {
			return nil, err
		}
		a.task, a.chain = t, t.Chain
		a.initiator = policies.Initiator{Kind: policies.InitiatorKind(t.InitiatorKind), ID: t.Initiator, Tenant: t.Tenant, Groups: t.Groups}
	default:
		t, err := b.defaultTask(id)
		if err != nil {
			return nil, err
		}
		a.task = t
	}
	if slices.Contains(a.chain, id.Agent) {
		return nil, fmt.Errorf("%w: %s is already on the chain %v (cycle)", agents.ErrOutsideTask, id.Agent, a.chain)
	}
	maxDepth := defaultMaxDepth
	if reg, ok := b.cfg.agent(id.Agent); ok && reg.MaxDepth > 0 {
		maxDepth = reg.MaxDepth
	}
	if depth := len(a.chain) + 1; depth > maxDepth {
		return nil, fmt.Errorf("%w: chain depth %d exceeds %s's limit of %d", agents.ErrOutsideTask, depth, id.Agent, maxDepth)
	}
	if a.task != nil && a.task.MaxDepth > 0 && len(a.chain)+1 > a.task.MaxDepth {
		return nil, fmt.Errorf("%w: chain depth %d exceeds task %s's limit of %d", agents.ErrOutsideTask, len(a.chain)+1, a.task.ID, a.task.MaxDepth)
	}
	return a, nil
}

// defaultTask finds or creates the registry default task of (agent,
// initiator); nil if the agent has none.
func (b *Broker) defaultTask(id agents.Identity) (*agents.Task, error) {
	reg, ok := b.cfg.agent(id.Agent)
	if !ok || reg.DefaultTask == nil {
		return nil, nil
	}
	b.defaultMu.Lock()
	defer b.defaultMu.Unlock()
	sum := sha256.Sum256([]byte(id.Key()))
	key := "default_" + hex.EncodeToString(sum[:12])
	now := b.now()
	tid, ok := b.defaults[key]
	if !ok {
		// Not granted by this process: the store may hold one (granted
		// before a restart, or revoked). Remembered either way, so the
		// store is scanned once per identity.
		if tid = b.storedDefault(id); tid != "" {
			b.defaults[key] = tid
		}
	}
	if tid != "" {
		if t, err := b.tasks.Get(tid); err == nil {
			if t.RevokedAt != nil && now.Before(t.ExpiresAt) {
				// An operator revoked it: no fresh default replaces it
				// before it would have expired.
				return nil, t.Live(now)
			}
			if t.Live(now) == nil {
				b.defaults[key] = t.ID
				return t, nil
			}
		}
	}
	d := reg.DefaultTask
	_, t, err := b.tasks.Grant(agents.Task{
		Initiator: id.Initiator, InitiatorKind: id.InitiatorKind, Tenant: id.Tenant, Groups: id.Groups,
		Agent: id.Agent, Purpose: d.Purpose, Tools: d.Tools, MaxCalls: d.MaxCalls, MaxDepth: reg.MaxDepth,
		ExpiresAt: now.Add(time.Duration(d.TTL)), Source: "default",
	})
	if err != nil {
		return nil, err
	}
	b.defaults[key] = t.ID
	b.record(context.Background(), audit.Event{Type: audit.TaskGranted, Agent: t.Agent, Initiator: t.Initiator, Tenant: t.Tenant,
		Detail: fmt.Sprintf("default task %s: tools %v", t.ID, t.Tools)})
	return t, nil
}

// storedDefault is the ID of the latest default task stored for id (same
// agent, initiator and tenant), or "".
func (b *Broker) storedDefault(id agents.Identity) string {
	all, err := b.tasks.List()
	if err != nil {
		return ""
	}
	var latest *agents.Task
	for _, t := range all {
		if t.Source == "default" && t.Agent == id.Agent && t.InitiatorKind == id.InitiatorKind &&
			t.Initiator == id.Initiator && t.Tenant == id.Tenant && (latest == nil || t.CreatedAt.After(latest.CreatedAt)) {
			latest = t
		}
	}
	if latest == nil {
		return ""
	}
	return latest.ID
}

// taskContext is the task as Cedar sees it: the task's patterns expanded
// over the catalog's current names (plus the broker's own tools).
func (b *Broker) taskContext(a *acting) *policies.Task {
	if a.task == nil {
		return nil
	}
	snap := b.pool.Snapshot()
	key := a.task.ID + "\x00" + strings.Join(a.limit, ",")
	names, ok := b.taskTools.get(snap, key)
	if !ok {
		names = []string{toolDelegate, toolTask}
		for _, t := range snap.Tools {
			if a.allowsTool(t.Exposed) {
				names = append(names, t.Exposed)
			}
		}
		b.taskTools.put(snap, key, names)
	}
	return &policies.Task{ID: a.task.ID, AllowedTools: names, ExpiresAt: a.task.ExpiresAt, Purpose: a.task.Purpose}
}

// taskToolsCache keeps each task's expanded tool names for the current
// catalog snapshot (a task's patterns never change; the catalog does).
type taskToolsCache struct {
	mu   sync.Mutex
	snap *tools.Snapshot
	m    map[string][]string
}

func (c *taskToolsCache) get(snap *tools.Snapshot, key string) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap != snap {
		return nil, false
	}
	v, ok := c.m[key]
	return v, ok
}

func (c *taskToolsCache) put(snap *tools.Snapshot, key string, names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap != snap || len(c.m) > 10000 {
		c.snap, c.m = snap, map[string][]string{}
	}
	c.m[key] = names
}

// chainMeta mints a chain token when the target server is an agent, and
// returns the ctx carrying it plus its release func.
func (b *Broker) chainMeta(ctx context.Context, c *call, target tools.Tool) (context.Context, func()) {
	agentID := b.serverAgents[target.Server]
	if agentID == "" || c.acting == nil {
		return ctx, func() {}
	}
	a := c.acting
	cl := agents.ChainClaims{
		Initiator: a.initiator.ID, InitiatorKind: agents.InitiatorKind(a.initiator.Kind), Tenant: a.initiator.Tenant,
		Groups: a.initiator.Groups, Chain: a.fullChain(), Target: agentID, ParentCall: c.id,
	}
	if a.task != nil {
		cl.Task = a.task.ID
	}
	tok, release := b.chains.Mint(cl, b.callTimeout, b.now())
	return tools.WithExtraMeta(ctx, map[string]any{MetaChain: tok}), release
}

// errUnregistered refuses an authenticated agent the registry does not
// know (identity.admit_unregistered lets policy decide instead).
var errUnregistered = errors.New("unregistered agent")

// taskReason maps task errors to the agent's reason code.
func taskReason(err error) Reason {
	switch {
	case errors.Is(err, errUnregistered):
		return ReasonDeniedByPolicy
	case errors.Is(err, agents.ErrOutsideTask), errors.Is(err, agents.ErrTaskEnded),
		errors.Is(err, agents.ErrBudget), errors.Is(err, agents.ErrUnknownTask), errors.Is(err, agents.ErrChainToken):
		return ReasonOutsideTask
	}
	return ReasonInternal
}

func chainString(chain []string) string { return strings.Join(chain, " > ") }

// brokerTools are the broker's own tools, listed and policy-checked like
// any downstream tool (server "broker").
func (b *Broker) brokerTools() []server.ServerTool {
	ro, no := true, false
	delegate := mcp.NewTool(toolDelegate,
		mcp.WithDescription("Create a sub-task for a named sub-agent: a subset of your task's tools, for at most as long and as many calls as you have left. Returns a task handle the sub-agent presents (HTTP header Mcp-Broker-Task or _meta io.mcpbroker/task)."),
		mcp.WithString("agent", mcp.Required(), mcp.Description("SPIFFE ID of the sub-agent")),
		mcp.WithArray("tools", mcp.Required(), mcp.Description("tool name patterns, each inside your own task"), mcp.WithStringItems()),
		mcp.WithString("ttl", mcp.Description("how long, e.g. 15m; default: until your task expires")),
		mcp.WithNumber("max_calls", mcp.Description("call budget; default: what you have left")),
		mcp.WithString("purpose", mcp.Description("what the sub-agent is for")),
	)
	delegate.Annotations.ReadOnlyHint, delegate.Annotations.DestructiveHint = &no, &no
	task := mcp.NewTool(toolTask,
		mcp.WithDescription("What your session may do: the task's tools, expiry, remaining call budget and delegation chain."),
	)
	task.Annotations.ReadOnlyHint, task.Annotations.DestructiveHint = &ro, &no
	return []server.ServerTool{
		{Tool: delegate, Handler: b.brokerToolHandler(delegate, b.doDelegate)},
		{Tool: task, Handler: b.brokerToolHandler(task, b.doTaskInfo)},
	}
}

func (b *Broker) brokerToolHandler(def mcp.Tool, run func(ctx context.Context, c *call, req mcp.CallToolRequest) (*mcp.CallToolResult, error)) server.ToolHandlerFunc {
	name := strings.TrimPrefix(def.Name, "broker__")
	target := policies.Target{Kind: policies.TargetTool, Server: brokerServer, Name: name, Exposed: def.Name,
		ReadOnly: def.Annotations.ReadOnlyHint != nil && *def.Annotations.ReadOnlyHint, Idempotent: false, OpenWorld: false}
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		raw := req.Params.RawArguments
		if raw == nil && req.Params.Arguments != nil {
			raw, _ = json.Marshal(req.Params.Arguments)
		}
		c, reason := b.admit(ctx, "tools/call", policies.ActionCallTool, target, raw, req.Params.Meta)
		if reason != "" {
			c.span.End("refused", string(reason))
			return refusal(reason, c.id), nil
		}
		res, err := run(ctx, c, req)
		if err != nil {
			reason := taskReason(err)
			if reason == ReasonInternal {
				reason = ReasonInvalidArguments
			}
			b.log.Info("broker tool refused", "call_id", c.id, "tool", def.Name, "err", err)
			_ = b.complete(ctx, c, audit.StatusToolError, reason, truncate(err.Error(), 300))
			r := refusal(reason, c.id)
			// The detail is the caller's own request, safe to show.
			r.Content = append(r.Content, mcp.NewTextContent(err.Error()))
			return r, nil
		}
		if err := b.complete(ctx, c, audit.StatusOK, "", ""); err != nil {
			return refusal(ReasonInternal, c.id), nil
		}
		return res, nil
	}
}

func (b *Broker) doDelegate(ctx context.Context, c *call, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	a := c.acting
	if a.task == nil {
		return nil, fmt.Errorf("%w: this session has no task to delegate from", agents.ErrOutsideTask)
	}
	if a.chainCall != "" {
		// A chained sub-agent acts only while its caller's call is in
		// flight; a task it granted would outlive that call.
		return nil, fmt.Errorf("%w: a chained call cannot delegate (it acts only within its caller's call)", agents.ErrOutsideTask)
	}
	var in struct {
		Agent    string   `json:"agent"`
		Tools    []string `json:"tools"`
		TTL      string   `json:"ttl"`
		MaxCalls float64  `json:"max_calls"`
		Purpose  string   `json:"purpose"`
	}
	if err := json.Unmarshal(c.args.Canonical, &in); err != nil {
		return nil, fmt.Errorf("arguments: %w", err)
	}
	if err := ValidateSPIFFEID(in.Agent); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	var ttl time.Duration
	if in.TTL != "" {
		d, err := time.ParseDuration(in.TTL)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("ttl %q is not a positive duration", in.TTL)
		}
		ttl = d
	}
	if in.MaxCalls < 0 || in.MaxCalls != float64(int64(in.MaxCalls)) {
		return nil, fmt.Errorf("max_calls must be a non-negative integer")
	}
	maxDepth := defaultMaxDepth
	if reg, ok := b.cfg.agent(in.Agent); ok && reg.MaxDepth > 0 {
		maxDepth = reg.MaxDepth
	}
	// The sub-task extends the session's chain (a handle's task carries
	// its own).
	parent := *a.task
	parent.Chain = a.chain
	handle, child, err := b.tasks.Delegate(&parent, a.agent.Agent, agents.SubTask{
		Agent: in.Agent, Tools: in.Tools, TTL: ttl, MaxCalls: int64(in.MaxCalls), Purpose: in.Purpose,
	}, maxDepth)
	if err != nil {
		return nil, err
	}
	b.record(ctx, audit.Event{Type: audit.TaskGranted, CallID: c.id, Agent: child.Agent, Initiator: child.Initiator,
		Tenant: child.Tenant, Chain: append(slices.Clone(child.Chain), child.Agent), Task: child.ID,
		Detail: fmt.Sprintf("delegated by %s from %s: tools %v, %d calls, until %s", a.agent.Agent, a.task.ID, child.Tools, child.MaxCalls, child.ExpiresAt.UTC().Format(time.RFC3339))})
	out := map[string]any{
		"handle": handle, "task_id": child.ID, "agent": child.Agent, "tools": child.Tools,
		"expires_at": child.ExpiresAt.UTC().Format(time.RFC3339), "max_calls": child.MaxCalls,
		"chain": append(slices.Clone(child.Chain), child.Agent),
	}
	txt, _ := json.Marshal(out)
	res := mcp.NewToolResultText(string(txt))
	res.StructuredContent = out
	return res, nil
}

func (b *Broker) doTaskInfo(ctx context.Context, c *call, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	a := c.acting
	out := map[string]any{
		"agent":     a.agent.Agent,
		"initiator": a.initiator.ID,
		"chain":     a.fullChain(),
		"depth":     len(a.chain) + 1,
	}
	if a.task != nil {
		rem, err := b.tasks.Remaining(a.task)
		if err != nil {
			return nil, err
		}
		out["task_id"] = a.task.ID
		out["tools"] = a.task.Tools
		out["purpose"] = a.task.Purpose
		out["expires_at"] = a.task.ExpiresAt.UTC().Format(time.RFC3339)
		out["remaining_calls"] = rem
		if len(a.limit) > 0 {
			out["limited_to"] = a.limit
		}
	}
	txt, _ := json.Marshal(out)
	res := mcp.NewToolResultText(string(txt))
	res.StructuredContent = out
	return res, nil
}

// charge is what a forwarded call of a spends: its task's budgets (and its
// ancestors'), and a chained sub-agent's own default task's.
func (b *Broker) charge(a *acting) (*store.Spend, error) {
	var sp store.Spend
	for _, t := range []*agents.Task{a.task, a.own} {
		if t == nil {
			continue
		}
		ids, limits, err := b.tasks.Charge(t)
		if err != nil {
			return nil, err
		}
		for i, id := range ids {
			if !slices.Contains(sp.IDs, id) {
				sp.IDs, sp.Limits = append(sp.IDs, id), append(sp.Limits, limits[i])
			}
		}
	}
	if len(sp.IDs) == 0 {
		return nil, nil
	}
	return &sp, nil
}
