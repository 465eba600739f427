package broker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/policies"
	"github.com/mcpbroker/mcpbroker/tools"
)

// bodyReadTimeout bounds how long a request body may take to arrive.
const bodyReadTimeout = 30 * time.Second

// serverName is the name the broker gives itself to agents.
const serverName = "mcpbroker"

// newMCPServer builds the agent-facing MCP server. Tools, resources and
// prompts are registered from the pool's catalog by applyCatalog.
func (b *Broker) newMCPServer() *server.MCPServer {
	hooks := &server.Hooks{}
	hooks.AddOnRegisterSession(func(ctx context.Context, s server.ClientSession) {
		id, ok := agents.FromContext(ctx)
		if !ok {
			return
		}
		if err := b.sessions.Bind(s.SessionID(), id); err != nil && !errors.Is(err, agents.ErrUnknownSession) {
			b.log.Warn("session binding refused", "session", s.SessionID(), "err", err)
			return
		}
		b.record(ctx, audit.Event{Type: audit.SessionOpened, Session: s.SessionID(), Agent: id.Agent,
			Initiator: id.Initiator, Tenant: id.Tenant, Detail: "auth " + id.Method})
	})
	hooks.AddOnUnregisterSession(func(ctx context.Context, s server.ClientSession) {
		_, _ = b.sessions.Terminate(s.SessionID())
		b.sessionTasks.forget(s.SessionID())
		if b.fast != nil {
			b.fast.forget(s.SessionID())
		}
		b.record(ctx, audit.Event{Type: audit.SessionClosed, Session: s.SessionID()})
	})
	// Requests refused before any handler ran (unknown tool, malformed
	// params, unknown method) still leave a record.
	hooks.AddOnError(func(ctx context.Context, id any, method mcp.MCPMethod, message any, err error) {
		ev := audit.Event{Type: audit.RequestRejected, Method: string(method), Decision: audit.DecisionDeny,
			Detail: truncate(err.Error(), 200)}
		if s := server.ClientSessionFromContext(ctx); s != nil {
			ev.Session = s.SessionID()
		}
		if who, ok := agents.FromContext(ctx); ok {
			ev.Agent, ev.Initiator, ev.Tenant = who.Agent, who.Initiator, who.Tenant
		}
		if req, ok := message.(*mcp.CallToolRequest); ok {
			ev.Target = req.Params.Name
		}
		b.record(ctx, ev)
		b.log.Info("request rejected", "method", method, "err", err)
	})
	// tools/list shows an agent only what policy could allow it.
	hooks.AddAfterListTools(func(ctx context.Context, _ any, req *mcp.ListToolsRequest, res *mcp.ListToolsResult) {
		res.Tools = b.visibleTools(ctx, req, res.Tools)
	})
	// So do the other listings: only what the task's servers and policy
	// could allow (a listing names other tenants' and servers' things).
	hooks.AddAfterListPrompts(func(ctx context.Context, _ any, req *mcp.ListPromptsRequest, res *mcp.ListPromptsResult) {
		snap := b.pool.Snapshot()
		res.Prompts = visibleOf(b, ctx, req.Params.Meta, res.Prompts, func(p mcp.Prompt) (policies.Action, policies.Target, bool) {
			tp, ok := snap.Prompt(p.Name)
			if !ok {
				return "", policies.Target{}, false
			}
			return policies.ActionGetPrompt, policies.Target{Kind: policies.TargetPrompt, Server: tp.Server, Name: tp.Name, Exposed: tp.Exposed,
				ReadOnly: true, Idempotent: true}, true
		})
	})
	hooks.AddAfterListResources(func(ctx context.Context, _ any, req *mcp.ListResourcesRequest, res *mcp.ListResourcesResult) {
		snap := b.pool.Snapshot()
		res.Resources = visibleOf(b, ctx, req.Params.Meta, res.Resources, func(r mcp.Resource) (policies.Action, policies.Target, bool) {
			tr, ok := snap.Resource(r.URI)
			if !ok {
				return "", policies.Target{}, false
			}
			return policies.ActionReadResource, policies.Target{Kind: policies.TargetResource, Server: tr.Server, Name: r.URI, Exposed: r.URI,
				ReadOnly: true, Idempotent: true}, true
		})
	})
	hooks.AddAfterListResourceTemplates(func(ctx context.Context, _ any, req *mcp.ListResourceTemplatesRequest, res *mcp.ListResourceTemplatesResult) {
		snap := b.pool.Snapshot()
		servers := map[string]string{}
		for _, t := range snap.Templates {
			if t.Def.URITemplate != nil {
				servers[t.Def.URITemplate.Raw()] = t.Server
			}
		}
		res.ResourceTemplates = visibleOf(b, ctx, req.Params.Meta, res.ResourceTemplates, func(t mcp.ResourceTemplate) (policies.Action, policies.Target, bool) {
			if t.URITemplate == nil {
				return "", policies.Target{}, false
			}
			srv, ok := servers[t.URITemplate.Raw()]
			return policies.ActionReadResource, policies.Target{Kind: policies.TargetResource, Server: srv, Name: t.URITemplate.Raw(),
				Exposed: t.URITemplate.Raw(), ReadOnly: true, Idempotent: true}, ok
		})
	})
	return server.NewMCPServer(serverName, b.version,
		server.WithToolCapabilities(true),
		server.WithResourceCapabilities(false, true),
		server.WithPromptCapabilities(true),
		server.WithCompletions(),
		server.WithLogging(),
		server.WithHooks(hooks),
		server.WithRecovery(),
		server.WithResourceRecovery(),
		server.WithPromptCompletionProvider(b),
		server.WithResourceCompletionProvider(b),
		server.WithInstructions("mcpbroker: every tool call is authorized by policy and recorded. Tool names are <server>__<tool>."),
		// mcp-go logs every request at info; the broker writes its own line
		// per call (with the call ID), so the library's are kept for warnings.
		server.WithLogger(slog.New(warnOnly{b.log.Handler()})),
	)
}

// visibleOf filters a listing to the entries the caller could use: on a
// server its task allows (allowsServer) and with an action policy could
// allow. Without an identity, or with a task or chain that does not
// resolve, nothing is listed.
func visibleOf[T any](b *Broker, ctx context.Context, meta *mcp.Meta, in []T, target func(T) (policies.Action, policies.Target, bool)) []T {
	out := make([]T, 0, len(in))
	id, ok := agents.FromContext(ctx)
	if !ok {
		return out
	}
	session := ""
	if s := server.ClientSessionFromContext(ctx); s != nil {
		session = s.SessionID()
	}
	a, err := b.resolve(ctx, id, session, meta)
	if err != nil {
		return out
	}
	chain, task := b.policyChain(a), b.taskContext(a)
	servers := b.allowedServers(a) // nil: every server
	for _, e := range in {
		action, t, ok := target(e)
		if !ok {
			continue
		}
		if action == policies.ActionReadResource && a.task != nil && len(a.task.Resources) > 0 {
			if !a.allowsResource(t.Name) {
				continue
			}
		} else if servers != nil && t.Server != brokerServer && !servers[t.Server] {
			continue
		}
		t.Tenant = b.tenants[t.Server]
		if b.engine.Visible(policies.Request{CallID: "list", Action: action, Initiator: a.initiator, Chain: chain,
			Target: t, Now: b.now(), Task: task}) {
			out = append(out, e)
		}
	}
	return out
}

// visibleTools filters a tools/list result to what the caller's task
// allows and policy could allow it; without an identity, or with a task or
// chain that does not resolve, nothing is visible.
func (b *Broker) visibleTools(ctx context.Context, req *mcp.ListToolsRequest, in []mcp.Tool) []mcp.Tool {
	id, ok := agents.FromContext(ctx)
	if !ok {
		return []mcp.Tool{}
	}
	session := ""
	if s := server.ClientSessionFromContext(ctx); s != nil {
		session = s.SessionID()
	}
	var meta *mcp.Meta
	if req != nil {
		meta = req.Params.Meta
	}
	a, err := b.resolve(ctx, id, session, meta)
	if err != nil {
		b.log.Info("tools/list: task or chain refused", "agent", id.Agent, "err", err)
		return []mcp.Tool{}
	}
	chain := b.policyChain(a)
	task := b.taskContext(a)
	snap := b.pool.Snapshot()
	out := make([]mcp.Tool, 0, len(in))
	for _, t := range in {
		if !a.allowsTool(t.Name) {
			continue
		}
		target := policies.Target{Kind: policies.TargetTool, Server: brokerServer, Name: strings.TrimPrefix(t.Name, "broker__"), Exposed: t.Name}
		if ct, ok := snap.Tool(t.Name); ok {
			target = policies.Target{Kind: policies.TargetTool, Server: ct.Server, Name: ct.Name, Exposed: ct.Exposed,
				ReadOnly: ct.ReadOnly, Destructive: ct.Destructive, Idempotent: ct.Idempotent, OpenWorld: ct.OpenWorld, RiskTags: ct.RiskTags,
				Unpinned: b.isUnpinned(ct.Server, ct.Name), Tenant: b.tenants[ct.Server]} // as a call sees it
		} else if t.Name != toolDelegate && t.Name != toolTask {
			continue
		}
		// The task in context names only this tool (already checked against
		// the task above): the full expanded set per tool would make a
		// listing quadratic in the catalog. A listing grants nothing; every
		// call is decided with the whole set.
		var tctx *policies.Task
		if task != nil {
			tt := *task
			tt.AllowedTools = []string{toolDelegate, toolTask, t.Name}
			tctx = &tt
		}
		if b.engine.Visible(policies.Request{
			CallID: "list", Action: policies.ActionCallTool, Initiator: a.initiator, Chain: chain,
			Target: target, Now: b.now(), Task: tctx,
		}) {
			out = append(out, t)
		}
	}
	return out
}

// applyCatalog registers the pool's current catalog with the MCP server,
// touching each kind only when it changed (each change notifies every
// session with list_changed).
func (b *Broker) applyCatalog(s *tools.Snapshot) {
	b.catMu.Lock()
	defer b.catMu.Unlock()
	b.observePins(s)
	for name, err := range b.pool.Status() {
		b.metrics.DownstreamHealth(name, err == nil)
	}

	toolSum := sha256.New()
	st := b.brokerTools()
	fast := map[string]server.ServerTool{}
	for _, t := range s.Tools {
		if strings.HasPrefix(t.Exposed, "broker__") || t.Server == brokerServer {
			// The broker's own namespace: a downstream tool there would
			// replace broker__task or broker__delegate, which every task
			// admits (allowsTool), and skip the budget (Server "broker").
			b.log.Warn("downstream tool withheld: the broker__ namespace is the broker's own", "tool", t.Exposed, "server", t.Server)
			continue
		}
		if err := mcp.ValidateParamHeaderAnnotations(&t.Def); err != nil {
			b.log.Warn("downstream tool withheld: invalid x-mcp-header annotations", "tool", t.Exposed, "err", err)
			continue
		}
		def, _ := json.Marshal(t.Def)
		toolSum.Write(def)
		h := b.toolHandler(t)
		st = append(st, server.ServerTool{Tool: t.Def, Handler: h})
		fast[t.Exposed] = server.ServerTool{Tool: t.Def, Handler: h}
	}
	if sum := string(toolSum.Sum(nil)); sum != b.lastTools {
		b.lastTools = sum
		func() {
			defer func() {
				if r := recover(); r != nil { // AddTools panics on bad definitions (pitfall 2)
					b.log.Error("tool registration failed", "panic", fmt.Sprint(r))
				}
			}()
			b.mcp.SetTools(st...)
		}()
		if b.fast != nil {
			b.fast.setTools(fast)
			b.fast.staleAll()
		}
		b.log.Info("tool catalog updated", "tools", len(st))
	}

	resSum := sha256.New()
	var sr []server.ServerResource
	for i := range s.Resources {
		r := s.Resources[i]
		def, _ := json.Marshal(r.Def)
		resSum.Write(def)
		sr = append(sr, server.ServerResource{Resource: r.Def, Handler: b.resourceHandler(r.Server, &r)})
	}
	var stt []server.ServerResourceTemplate
	for _, t := range s.Templates {
		def, _ := json.Marshal(t.Def)
		resSum.Write(def)
		stt = append(stt, server.ServerResourceTemplate{Template: t.Def, Handler: server.ResourceTemplateHandlerFunc(b.resourceHandler(t.Server, nil))})
	}
	if sum := string(resSum.Sum(nil)); sum != b.lastResources {
		b.lastResources = sum
		b.mcp.SetResources(sr...)
		b.mcp.SetResourceTemplates(stt...)
		if b.fast != nil {
			b.fast.staleAll() // list_changed queued for every session
		}
	}

	promptSum := sha256.New()
	var sp []server.ServerPrompt
	for _, p := range s.Prompts {
		def, _ := json.Marshal(p.Def)
		promptSum.Write(def)
		sp = append(sp, server.ServerPrompt{Prompt: p.Def, Handler: b.promptHandler(p)})
	}
	if sum := string(promptSum.Sum(nil)); sum != b.lastPrompts {
		b.lastPrompts = sum
		b.mcp.SetPrompts(sp...)
		if b.fast != nil {
			b.fast.staleAll() // list_changed queued for every session
		}
	}
}

// CompletePromptArgument routes completion/complete for a prompt to its
// server, under the server's own prompt name.
func (b *Broker) CompletePromptArgument(ctx context.Context, name string, arg mcp.CompleteArgument, cc mcp.CompleteContext) (*mcp.Completion, error) {
	if _, ok := agents.FromContext(ctx); !ok {
		return nil, refusalError(ReasonUnauthenticated, "")
	}
	p, ok := b.pool.Snapshot().Prompt(name)
	if !ok {
		return nil, fmt.Errorf("unknown prompt %q", name)
	}
	// Completing a prompt's arguments reveals what the server would offer:
	// only callers who could get the prompt may ask.
	if !b.mayTouch(ctx, policies.Target{Kind: policies.TargetPrompt, Server: p.Server, Name: p.Name, Exposed: p.Exposed, ReadOnly: true, Idempotent: true}) {
		return nil, refusalError(ReasonDeniedByPolicy, "")
	}
	res, err := b.pool.Complete(ctx, p.Server, mcp.CompleteParams{
		Ref: mcp.PromptReference{Type: "ref/prompt", Name: p.Name}, Argument: arg, Context: cc,
	})
	if err != nil {
		return nil, b.completionError(ctx, p.Server, err)
	}
	return &res.Completion, nil
}

// CompleteResourceArgument routes completion/complete for a resource
// template to the server that owns it.
func (b *Broker) CompleteResourceArgument(ctx context.Context, uri string, arg mcp.CompleteArgument, cc mcp.CompleteContext) (*mcp.Completion, error) {
	if _, ok := agents.FromContext(ctx); !ok {
		return nil, refusalError(ReasonUnauthenticated, "")
	}
	snap := b.pool.Snapshot()
	for _, t := range snap.Templates {
		if t.Def.URITemplate != nil && t.Def.URITemplate.Raw() == uri {
			if !b.mayTouch(ctx, policies.Target{Kind: policies.TargetResource, Server: t.Server, Name: uri, Exposed: uri, ReadOnly: true, Idempotent: true}) {
				return nil, refusalError(ReasonDeniedByPolicy, "")
			}
			res, err := b.pool.Complete(ctx, t.Server, mcp.CompleteParams{
				Ref: mcp.ResourceReference{Type: "ref/resource", URI: uri}, Argument: arg, Context: cc,
			})
			if err != nil {
				return nil, b.completionError(ctx, t.Server, err)
			}
			return &res.Completion, nil
		}
	}
	return nil, fmt.Errorf("unknown resource template %q", uri)
}

// completionError logs a failed completion and gives the agent only the
// reason code: downstream error strings stay in the log.
func (b *Broker) completionError(ctx context.Context, server string, err error) error {
	_, class := classify(ctx, err)
	b.log.Warn("completion failed", "server", server, "class", class, "err", err)
	return refusalError(class, "")
}

// httpHandler wraps mcp-go's streamable HTTP server with what it lacks
// (notes/mcp-go.md §9): a body cap, Origin checking, authentication,
// session-to-identity binding, and dropping session-less cancellations.
func (b *Broker) httpHandler(stream http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		status := map[string]any{"status": "ok", "servers": map[string]string{}}
		for name, err := range b.pool.Status() {
			v := "up"
			if err != nil {
				v = "down"
			}
			status["servers"].(map[string]string)[name] = v
		}
		_ = json.NewEncoder(w).Encode(status)
	})
	b.routeIdentity(mux)
	mux.Handle("GET /metrics", b.metrics.Handler())
	mux.Handle("GET /readyz", b.ready.Handler())
	mux.Handle("/mcp", b.guard(stream))
	mux.Handle("/approvals/", b.approvalsHandler())
	return mux
}

var modernMetaKey = []byte(`"io.modelcontextprotocol/protocolVersion"`)

// rawID returns a JSON-RPC id for an error response (null if absent).
func rawID(id json.RawMessage) any {
	if len(id) == 0 {
		return nil
	}
	return id
}

type rpcPeek struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  struct {
		RequestID json.RawMessage `json:"requestId"` // notifications/cancelled
	} `json:"params"`
}

func (b *Broker) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if reboundHost(r) {
			// mcp-go's DNS-rebinding protection, here so that no path
			// (the fast lane included) skips it: a loopback listener
			// answers only loopback Host names.
			http.Error(w, fmt.Sprintf("Forbidden: invalid Host header %q", r.Host), http.StatusForbidden)
			return
		}
		if !b.originAllowed(r) {
			b.recordPreAuth(r.Context(), audit.Event{Type: audit.RequestRejected, Decision: audit.DecisionDeny,
				Detail: "origin not allowed: " + truncate(r.Header.Get("Origin"), 100)})
			writeRPCError(w, http.StatusForbidden, nil, mcp.INVALID_REQUEST, "origin not allowed")
			return
		}
		// Authenticate from the headers first: an unauthenticated client
		// never gets its body read.
		id, err := b.auth.Authenticate(r)
		if err != nil {
			b.recordPreAuth(r.Context(), audit.Event{Type: audit.AuthFailed, Decision: audit.DecisionDeny,
				Reason: string(ReasonUnauthenticated), Detail: err.Error()})
			b.log.Warn("authentication failed", "remote", r.RemoteAddr, "method", r.Method, "err", err)
			b.challenge(w, r, err)
			return
		}
		ctx := withPresented(agents.WithIdentity(r.Context(), id), r)

		if r.Method == http.MethodGet && r.Header.Get(server.HeaderKeySessionID) == "" && !mcp.IsModernProtocol(r.Header.Get(mcp.HeaderProtocolVersion)) {
			// A stream belongs to a session: mcp-go would open a new one
			// for each such GET, and keep it for the idle TTL.
			b.record(ctx, audit.Event{Type: audit.RequestRejected, Agent: id.Agent, Initiator: id.Initiator, Tenant: id.Tenant,
				Method: "GET", Decision: audit.DecisionDeny, Detail: "a stream without a session"})
			writeRPCError(w, http.StatusBadRequest, nil, mcp.INVALID_REQUEST, "no session: send initialize first; a GET stream belongs to a session")
			return
		}
		var body []byte
		if r.Method == http.MethodPost {
			if r.ContentLength > b.maxBody {
				b.rejectBody(w, r)
				return
			}
			// A body that trickles in must not hold a connection and a
			// goroutine for ever: it has bodyReadTimeout to arrive.
			rc := http.NewResponseController(w)
			_ = rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
			var err error
			body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, b.maxBody))
			_ = rc.SetReadDeadline(time.Time{})
			if err != nil {
				var mbe *http.MaxBytesError
				if errors.As(err, &mbe) {
					b.rejectBody(w, r)
					return
				}
				writeRPCError(w, http.StatusBadRequest, nil, mcp.PARSE_ERROR, "could not read request body")
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}

		sid := r.Header.Get(server.HeaderKeySessionID)
		if sid != "" {
			if err := b.sessions.Check(sid, id); err != nil {
				if errors.Is(err, agents.ErrSessionMismatch) {
					b.record(ctx, audit.Event{Type: audit.RequestRejected, Session: sid, Agent: id.Agent,
						Initiator: id.Initiator, Tenant: id.Tenant, Decision: audit.DecisionDeny,
						Detail: "session presented under another identity"})
					b.log.Warn("session presented under another identity", "session", sid, "agent", id.Agent)
					writeRPCError(w, http.StatusForbidden, nil, mcp.INVALID_REQUEST, "session belongs to another identity")
					return
				}
				if errors.Is(err, agents.ErrSessionRevoked) {
					b.record(ctx, audit.Event{Type: audit.RequestRejected, Session: sid, Agent: id.Agent,
						Initiator: id.Initiator, Tenant: id.Tenant, Decision: audit.DecisionDeny, Detail: "session revoked"})
					writeRPCError(w, http.StatusForbidden, nil, mcp.INVALID_REQUEST, "session revoked")
					return
				}
				// Unknown or ended: 404 tells the client to start over.
				writeRPCError(w, http.StatusNotFound, nil, mcp.INVALID_REQUEST, "unknown or expired session")
				return
			}
		}
		// JSON may spell the method with escapes ("notifications\/cancelled"),
		// which mcp-go decodes: a body with any backslash is decoded too.
		if r.Method == http.MethodPost && (bytes.Contains(body, []byte("notifications/cancelled")) || bytes.IndexByte(body, '\\') >= 0) {
			var m rpcPeek
			if json.Unmarshal(body, &m) == nil && m.Method == string(mcp.MethodNotificationCancelled) && (sid == "" || isModernRequest(r.Header, body)) {
				// Without a session, request IDs are not unique across
				// clients: honouring it could cancel another agent's call
				// (pitfall 3). Over HTTP, closing the stream cancels. A
				// 2026-07-28 request is served without its session even
				// when it carries one, so it counts as session-less.
				b.log.Debug("session-less cancellation dropped", "agent", id.Agent)
				w.WriteHeader(http.StatusAccepted)
				return
			}
			if b.fast != nil && sid != "" && m.Method == string(mcp.MethodNotificationCancelled) {
				b.fast.cancel(sid, m.Params.RequestID)
			}
		}
		if r.Method == http.MethodPost && sid == "" && !bytes.Contains(body, modernMetaKey) {
			// Neither a 2025-11-25 session nor a 2026-07-28 request: only
			// initialize may start one. A JSON-RPC 4xx lets clients that
			// probe (server/discover first) fall back cleanly.
			var m rpcPeek
			if err := json.Unmarshal(body, &m); err != nil {
				writeRPCError(w, http.StatusBadRequest, nil, mcp.PARSE_ERROR, "request body is not a JSON-RPC message")
				return
			}
			if m.Method != string(mcp.MethodInitialize) {
				b.record(ctx, audit.Event{Type: audit.RequestRejected, Agent: id.Agent, Initiator: id.Initiator, Tenant: id.Tenant,
					Method: truncate(m.Method, 100), Decision: audit.DecisionDeny, Detail: "no session and no 2026-07-28 _meta"})
				writeRPCError(w, http.StatusBadRequest, rawID(m.ID), mcp.INVALID_REQUEST,
					"no session: send initialize first (MCP 2025-11-25 and earlier) or carry _meta io.modelcontextprotocol/protocolVersion (2026-07-28)")
				return
			}
		}
		if b.serveFast(w, r, ctx, sid, body, next) {
			return
		}
		if b.fast != nil && sid != "" && r.Method == http.MethodPost && !isModernRequest(r.Header, body) {
			// A 2025-11-25 request or notification that mcp-go accepts
			// restarts its idle clock for the session (a client's response
			// does not, nor does a refusal).
			var m rpcPeek
			if json.Unmarshal(body, &m) == nil && m.Method != "" {
				sw := &statusWriter{ResponseWriter: w}
				next.ServeHTTP(sw, r.WithContext(ctx))
				if sw.status < http.StatusBadRequest {
					b.fast.touched(sid)
				}
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// reboundHost is mcp-go's DNS-rebinding test: a request that reached a
// loopback listener under a Host name that is not loopback.
func reboundHost(r *http.Request) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok || local == nil {
		return false
	}
	return loopbackAddr(local.String()) && !loopbackAddr(r.Host)
}

// loopbackAddr is mcp-go's isLoopbackHost: host[:port] naming localhost or
// a loopback IP.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = strings.Trim(addr, "[]")
	}
	return isLoopbackHost(strings.ToLower(host))
}

// statusWriter notes the status mcp-go answers with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// isModernRequest reports whether mcp-go will serve the request as
// 2026-07-28 (session-less), deciding exactly as its detectRequestEra does.
func isModernRequest(h http.Header, body []byte) bool {
	var w struct {
		Params struct {
			Meta *mcp.Meta `json:"_meta"`
		} `json:"params"`
	}
	v := ""
	if json.Unmarshal(body, &w) == nil {
		v = w.Params.Meta.ProtocolVersion()
	}
	return mcp.IsModernProtocol(v) || mcp.IsModernProtocol(h.Get(mcp.HeaderProtocolVersion))
}

func (b *Broker) rejectBody(w http.ResponseWriter, r *http.Request) {
	b.recordPreAuth(r.Context(), audit.Event{Type: audit.RequestRejected, Decision: audit.DecisionDeny,
		Detail: fmt.Sprintf("request body over %d bytes", b.maxBody)})
	b.log.Warn("request body too large", "remote", r.RemoteAddr, "limit", b.maxBody)
	writeRPCError(w, http.StatusRequestEntityTooLarge, nil, mcp.INVALID_REQUEST,
		fmt.Sprintf("request body exceeds the broker's limit of %d bytes", b.maxBody))
}

// originAllowed implements DNS-rebinding protection: a browser-sent Origin
// must be the broker's own listen host (any loopback name when it listens on
// loopback) or one configured in allowed_origins. Requests without Origin
// (non-browser clients) pass.
func (b *Broker) originAllowed(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	for _, a := range b.allowedOrigins {
		if strings.EqualFold(o, a) {
			return true
		}
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	lh, lp, _ := net.SplitHostPort(b.listenAddr)
	if u.Port() != lp {
		return false
	}
	h := u.Hostname()
	if strings.EqualFold(h, lh) {
		return true
	}
	return isLoopbackHost(lh) && isLoopbackHost(h)
}

func writeRPCError(w http.ResponseWriter, status int, id any, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"jsonrpc": "2.0",
		"id":      id,
		"error":   map[string]any{"code": code, "message": msg},
	})
}

// mayTouch reports whether policy could allow the caller (with its task and
// chain) the target at all: the gate for metadata requests such as
// completions, which are not calls and leave no decision record.
func (b *Broker) mayTouch(ctx context.Context, target policies.Target) bool {
	target.Tenant = b.tenants[target.Server]
	id, ok := agents.FromContext(ctx)
	if !ok {
		return false
	}
	session := ""
	if s := server.ClientSessionFromContext(ctx); s != nil {
		session = s.SessionID()
	}
	a, err := b.resolve(ctx, id, session, nil)
	if err != nil {
		return false
	}
	if target.Kind != policies.TargetTool && !b.allowsServer(a, target.Server) {
		return false // a prompt or resource of a server outside the task
	}
	return b.engine.Visible(policies.Request{CallID: "completion", Action: policies.ActionCallTool, Initiator: a.initiator,
		Chain: b.policyChain(a), Target: target, Now: b.now(), Task: b.taskContext(a)})
}

// warnOnly passes only warnings and errors to its handler.
type warnOnly struct{ slog.Handler }

func (w warnOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && w.Handler.Enabled(ctx, l)
}

func (w warnOnly) WithAttrs(as []slog.Attr) slog.Handler { return warnOnly{w.Handler.WithAttrs(as)} }
func (w warnOnly) WithGroup(n string) slog.Handler       { return warnOnly{w.Handler.WithGroup(n)} }
