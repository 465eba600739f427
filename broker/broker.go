package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/broker/metrics"
	"github.com/mcpbroker/mcpbroker/broker/store"
	"github.com/mcpbroker/mcpbroker/policies"
	"github.com/mcpbroker/mcpbroker/tools"
	"github.com/mcpbroker/mcpbroker/tools/demo"
)

// File names inside the data directory.
const (
	DBFile      = "mcpbroker.db"
	KeyFile     = "audit.key"
	AdminSocket = "admin.sock"
)

// Authenticator turns an HTTP request into an identity. agents.Dev is the
// dev-mode implementation; SPIFFE and OIDC slot in here.
type Authenticator interface {
	Authenticate(r *http.Request) (agents.Identity, error)
}

var _ Authenticator = (*agents.Dev)(nil)

// Options are the process-level settings cmd/ passes in.
type Options struct {
	Logger  *slog.Logger
	Version string
	// Stdio serves MCP on Stdin/Stdout instead of HTTP.
	Stdio  bool
	Stdin  io.Reader
	Stdout io.Writer
	// Ready, if set, is called once the broker serves, with the MCP URL
	// (empty for stdio).
	Ready func(mcpURL string)
	// StoreNoSync writes records without fsync. Benchmarks only (the
	// "written but not fsynced" comparison): a crash can lose records.
	StoreNoSync bool
	// NoFastLane sends every request through mcp-go (benchmarks and
	// tests compare the two paths).
	NoFastLane bool
	// Tracer exports a span per brokered call; nil traces nothing. cmd/
	// builds it from the OTEL_* environment.
	Tracer *metrics.Tracer
}

// Broker is one running mcpbroker. New provisions it; Run serves until the
// context ends and then shuts down in reverse data-flow order.
type Broker struct {
	fast    *fastLane // nil: every request goes through mcp-go
	cfg     Config
	opts    Options
	log     *slog.Logger
	version string
	now     func() time.Time

	store    *store.Store
	ledger   *audit.Ledger
	hasher   *audit.Hasher
	engine   *policies.Engine
	auth     Authenticator
	dev      *agents.Dev
	sessions *agents.Sessions
	pool     *tools.Pool
	mcp      *server.MCPServer
	relay    *relay
	parkers  *workers // runs 2026-07-28 calls' downstream legs (relay.go)

	approvals *approvalStage // approve.go

	metrics *metrics.Metrics
	tracer  *metrics.Tracer
	ready   metrics.Readiness
	started atomic.Bool

	policyBase []policies.Source
	reloader   *policyReloader
	// candidateReloader watches CandidatePolicies (log-only rollout).
	candidateReloader *policyReloader
	pins              *pins

	tasks        *agents.Tasks
	chains       *agents.Chains
	sessionTasks sessionTasks
	taskTools    taskToolsCache
	preAuth      preAuthLimit
	defaultMu    sync.Mutex
	defaults     map[string]string                   // identity key hash -> default task ID
	serverAgents map[string]string                   // server name -> its agent SPIFFE ID
	classes      map[string]map[string]audit.Classes // server -> tool -> field classes
	tenants      map[string]string                   // server -> the tenant it belongs to (resource.tenant)

	maxBody        int64
	callTimeout    time.Duration
	listenAddr     string
	allowedOrigins []string

	catMu                                 sync.Mutex
	lastTools, lastResources, lastPrompts string

	listener net.Listener
	spiffe   *spiffeIdentity // spiffe mode only (identity.go)
}

// New validates cfg and provisions every stage. On error, whatever was
// opened is closed again.
func New(cfg Config, opts Options) (b *Broker, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	b = &Broker{
		cfg: cfg, opts: opts, log: opts.Logger, version: opts.Version, now: time.Now,
		maxBody: cfg.MaxBodyBytes, callTimeout: time.Duration(cfg.CallTimeout),
		listenAddr: cfg.Listen, allowedOrigins: cfg.AllowedOrigins,
	}
	defer func() {
		if err != nil {
			b.closeStores()
		}
	}()

	// Policy first: an invalid set stops start-up before anything opens.
	// Start-up and hot reload load exactly the same way (LoadDir).
	b.policyBase = policies.Baseline()
	if cfg.demo {
		b.policyBase = append(b.policyBase, policies.Demo()...)
	}
	var set *policies.Set
	if cfg.Policies != "" {
		set, err = policies.LoadDir(cfg.Policies, b.policyBase...)
	} else {
		set, err = policies.Compile(b.policyBase)
	}
	if err != nil {
		return nil, fmt.Errorf("policy set rejected:\n%w", err)
	}
	b.engine = policies.NewEngine(set)
	if cfg.CandidatePolicies != "" {
		cand, err := policies.LoadDir(cfg.CandidatePolicies, b.policyBase...)
		if err != nil {
			return nil, fmt.Errorf("candidate policy set rejected:\n%w", err)
		}
		b.engine.SetCandidate(cand)
	}

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	b.store, err = store.Open(filepath.Join(cfg.DataDir, DBFile), store.Options{LockTimeout: time.Second, NoSync: opts.StoreNoSync})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	inData := func(p, name string) string {
		if p == "" {
			return filepath.Join(cfg.DataDir, name)
		}
		return p
	}
	b.hasher, err = audit.LoadOrCreateKey(inData(cfg.Audit.HMACKey, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	signer, err := audit.LoadOrCreateSigner(inData(cfg.Audit.SigningKey, audit.SigningKeyFile))
	if err != nil {
		return nil, fmt.Errorf("audit signing key: %w", err)
	}
	if cfg.Audit.SigningKey == "" && cfg.Audit.AnchorFile == "" && !cfg.demo {
		b.log.Info("the audit trail's signing key and anchor are in the data directory: whoever can write it can re-sign the ledger; keep the public key (mcpbroker audit pubkey) and copies of the anchor elsewhere, or set audit.signing_key and audit.anchor_file")
	}
	b.metrics = metrics.New()
	b.tracer = opts.Tracer
	b.ledger = audit.NewLedger(b.store, b.log, audit.WithSigner(signer),
		audit.WithCheckpointEvery(1000),
		audit.WithAnchorFile(inData(cfg.Audit.AnchorFile, audit.AnchorFile)),
		audit.WithCommitObserver(b.metrics.StoreCommit))
	b.metrics.LedgerSize(b.store.Size)
	b.metrics.StoreCommits(func() (uint64, uint64, time.Duration) {
		st := b.store.CommitStats()
		return st.Txs, st.Writes, st.Busy
	})
	b.metrics.StoreCheckpoints(func() (uint64, uint64, int64) {
		st := b.store.CommitStats()
		return st.Checkpoints, st.CheckpointFailures, st.LogBytes
	})
	b.ready.Add("policy", func(context.Context) error {
		if b.engine.Set() == nil {
			return errors.New("no policy set")
		}
		return nil
	})
	b.ready.Add("store", b.ledger.Ready)
	b.ready.Add("downstreams", func(context.Context) error {
		if !b.started.Load() {
			return errors.New("downstream pool not initialised")
		}
		return nil
	})

	if err := b.setupIdentity(); err != nil {
		return nil, err
	}
	b.sessions = agents.NewSessions(time.Hour, nil)
	b.sessionTasks.sessions = b.sessions
	if err := b.sessions.Persist(b.store); err != nil {
		return nil, err
	}
	b.relay = newRelay()
	b.parkers = newWorkers(workerIdle)
	if b.approvals, err = b.newApprovalStage(); err != nil {
		return nil, err
	}
	b.pins = &pins{st: b.store}
	b.tasks = agents.NewTasks(b.store, b.now)
	b.chains = agents.NewChains()
	b.defaults = map[string]string{}
	b.serverAgents = map[string]string{}
	b.classes = map[string]map[string]audit.Classes{}
	b.tenants = map[string]string{}
	for _, s := range cfg.Servers {
		if s.Tenant != "" {
			b.tenants[s.Name] = s.Tenant
		}
		if s.Agent != "" {
			b.serverAgents[s.Name] = s.Agent
		}
		if len(s.Classify) > 0 {
			b.classes[s.Name] = s.Classify
		}
	}

	specs, err := b.specs()
	if err != nil {
		return nil, err
	}
	b.pool, err = tools.NewPool(specs, tools.Options{Logger: b.log.With("component", "pool"), Version: opts.Version,
		MaxAnswerBytes: cfg.MaxAnswerBytes})
	if err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	b.mcp = b.newMCPServer()
	if !opts.NoFastLane && !cfg.noFastLane {
		b.fast = newFastLane(time.Duration(cfg.SessionIdleTTL), time.Duration(cfg.CallTimeout))
		b.metrics.FastLane(b.fast.served.Load, b.fast.handedOver.Load)
	}
	b.pool.OnChange(b.applyCatalog)
	return b, nil
}

func (b *Broker) setupIdentity() error {
	if b.cfg.Identity.Mode == "spiffe" {
		return b.setupSPIFFE()
	}
	ic := b.cfg.Identity
	var toks []agents.DevToken
	var errs []error
	for i, t := range ic.Tokens {
		ref := SecretRef{Env: t.TokenEnv, File: t.TokenFile}
		v, err := ref.Resolve()
		if err != nil {
			errs = append(errs, fmt.Errorf("identity.tokens[%d]: %w", i, err))
			continue
		}
		toks = append(toks, agents.DevToken{Token: string(v), Identity: agents.Identity{
			Agent: t.Agent, Initiator: t.Initiator, Tenant: t.Tenant, Groups: t.Groups, InitiatorKind: agents.InitiatorUser,
		}})
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var def agents.Identity
	if ic.DefaultAgent != "" {
		def = agents.Identity{Agent: ic.DefaultAgent, Initiator: ic.DefaultInitiator, Tenant: ic.DefaultTenant, InitiatorKind: agents.InitiatorUser}
	}
	dev, err := agents.NewDev(toks, def)
	if err != nil {
		return err
	}
	b.dev, b.auth = dev, dev
	b.log.Warn("DEV IDENTITY MODE: agents are identified by static tokens or a default identity; loopback only, never for production",
		"default_agent", ic.DefaultAgent, "tokens", len(toks))
	return nil
}

func (b *Broker) specs() ([]tools.Spec, error) {
	var out []tools.Spec
	var errs []error
	var demos map[string]*server.MCPServer
	for _, s := range b.cfg.Servers {
		transport := s.Transport
		if transport == "builtin" {
			transport = string(tools.TransportInProcess)
		}
		sp := tools.Spec{
			Name: s.Name, Transport: tools.Transport(transport), URL: s.URL,
			Command: s.Command, Args: s.Args, Env: s.Env, Dir: s.Dir, StdinTimeout: time.Duration(s.StdinTimeout),
			Prefix: s.ToolPrefix(), Trusted: s.Trusted, ProtocolVersion: s.ProtocolVersion, RiskTags: s.RiskTags,
		}
		if err := b.downstreamIdentity(&sp, s); err != nil {
			errs = append(errs, err)
		}
		if len(s.Headers) > 0 {
			sp.Headers = map[string]string{}
			for k, ref := range s.Headers {
				v, err := ref.Resolve()
				if err != nil {
					errs = append(errs, fmt.Errorf("servers %s: header %s: %w", s.Name, k, err))
					continue
				}
				sp.Headers[k] = string(v)
			}
			b.log.Warn("downstream uses a static credential from config", "server", s.Name, "headers", len(s.Headers))
		}
		if s.InProcess() != "" {
			if demos == nil {
				demos = demo.Servers()
				for k, v := range b.cfg.inProcess {
					demos[k] = v
				}
			}
			sp.Server = demos[s.InProcess()]
			if sp.Server == nil {
				errs = append(errs, fmt.Errorf("servers %s: no built-in server %q", s.Name, s.InProcess()))
			}
		}
		out = append(out, sp)
	}
	return out, errors.Join(errs...)
}

// Run connects the downstream servers, serves agents until ctx ends, then
// shuts down gracefully (bounded by 15 s).
func (b *Broker) Run(ctx context.Context) error {
	set := b.engine.Set()
	b.record(ctx, audit.Event{Type: audit.PolicyLoaded, PolicyDigest: set.Digest(), Detail: fmt.Sprintf("%d policies", set.Len())})
	b.log.Info("policy set loaded", "policies", set.Len(), "digest", set.Digest())

	if b.cfg.CandidatePolicies != "" {
		r, err := newPolicyReloader(reloaderConfig{Dir: b.cfg.CandidatePolicies, Base: b.policyBase, Engine: b.engine, Candidate: true,
			Logger: b.log.With("component", "policy-candidate"), OnReload: func(digest string, err error) {
				if err != nil {
					b.log.Warn("candidate policy set rejected; the previous candidate stays", "err", err)
					return
				}
				b.log.Info("candidate policy set loaded (log only)", "digest", digest)
			}})
		if err == nil {
			b.candidateReloader = r
		}
	}
	if b.cfg.Policies != "" {
		r, err := newPolicyReloader(reloaderConfig{Dir: b.cfg.Policies, Base: b.policyBase, Engine: b.engine,
			Logger: b.log.With("component", "policy"), OnReload: b.onPolicyReload})
		if err != nil {
			b.log.Warn("policy hot reload unavailable; SIGHUP still reloads", "err", err)
		} else {
			b.reloader = r
		}
	}
	if err := b.pool.Start(ctx, 20*time.Second); err != nil {
		_ = b.pool.Close()
		if b.reloader != nil {
			_ = b.reloader.Close()
		}
		if b.candidateReloader != nil {
			_ = b.candidateReloader.Close()
		}
		b.closeStores()
		return err
	}
	b.applyCatalog(b.pool.Snapshot())
	b.started.Store(true)

	admin, err := b.serveAdmin()
	if err != nil {
		b.log.Warn("admin socket not available", "err", err)
	}
	b.record(ctx, audit.Event{Type: audit.BrokerStarted, Detail: "version " + b.version})

	var serveErr error
	if b.opts.Stdio {
		serveErr = b.serveStdio(ctx)
	} else {
		serveErr = b.serveHTTP(ctx)
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if admin != nil {
		_ = admin.Shutdown(sctx)
	}
	b.shutdown(sctx)
	if errors.Is(serveErr, context.Canceled) || errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

func (b *Broker) serveHTTP(ctx context.Context) error {
	ln, err := net.Listen("tcp", b.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if b.spiffe != nil {
		ln = tls.NewListener(ln, b.spiffe.tls)
	}
	b.listener = ln
	b.listenAddr = ln.Addr().String()
	if b.cfg.Identity.Mode == "dev" {
		if ap, err := netip.ParseAddrPort(b.listenAddr); err != nil || !ap.Addr().IsLoopback() {
			ln.Close()
			return fmt.Errorf("dev identities are for loopback only, and the listener is on %s", b.listenAddr)
		}
	}
	stream := server.NewStreamableHTTPServer(b.mcp,
		server.WithSessionIdManager(b.sessions),
		server.WithSessionIdleTTL(time.Duration(b.cfg.SessionIdleTTL)),
		server.WithStreamableHTTPLogger(b.log.With("component", "http")),
		server.WithEventStore(newEventStore()),
		server.WithHTTPContextFunc(func(ctx context.Context, r *http.Request) context.Context {
			if id, ok := agents.FromContext(r.Context()); ok {
				ctx = agents.WithIdentity(ctx, id)
			}
			if p, ok := r.Context().Value(presentedKey{}).(presented); ok {
				ctx = context.WithValue(ctx, presentedKey{}, p)
			}
			return ctx
		}),
	)
	// Requests run on base: cancelling it after the drain grace cancels
	// the calls still in flight (and with them their downstream calls), so
	// shutdown is bounded even with hanging tools.
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	hs := &http.Server{
		Handler:           b.httpHandler(stream),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	url := b.scheme() + "://" + ln.Addr().String() + "/mcp"
	b.log.Info("serving MCP over streamable HTTP", "url", url)
	if b.opts.Ready != nil {
		b.opts.Ready(url)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Stop accepting and let in-flight calls finish for the grace period;
	// then cancel them (each records its outcome as cancelled) and wait a
	// little more for their handlers to return.
	grace := time.Duration(b.cfg.ShutdownGrace)
	b.log.Info("shutting down: draining calls in flight", "grace", grace)
	b.sessions.Detach() // sessions outlive the process: shutdown does not end them
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- hs.Shutdown(context.WithoutCancel(ctx)) }()
	select {
	case <-shut:
	case <-sctx.Done():
		b.log.Warn("calls still in flight after the grace period; cancelling them")
		cancelBase()
		select {
		case <-shut:
		case <-time.After(5 * time.Second):
			b.log.Warn("http shutdown incomplete; closing connections")
			_ = hs.Close()
		}
	}
	ectx, ecancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer ecancel()
	_ = stream.Shutdown(ectx)
	return nil
}

func (b *Broker) serveStdio(ctx context.Context) error {
	if b.dev == nil {
		return errors.New("stdio: identity mode spiffe serves HTTPS only; an agent that can only launch a command uses `mcpbroker connect`")
	}
	def, ok := b.dev.Default()
	if !ok {
		return errors.New("stdio: identity.default_agent is required (a stdio agent presents no token)")
	}
	def.Method = "stdio-default"
	stdio := server.NewStdioServer(b.mcp)
	stdio.SetContextFunc(func(ctx context.Context) context.Context { return agents.WithIdentity(ctx, def) })
	stdio.SetErrorLogger(slog.NewLogLogger(b.log.Handler(), slog.LevelWarn))
	// mcp-go's default of 5 workers lets a few slow calls queue the rest,
	// and a full queue stalls the reader, elicitation answers included.
	server.WithWorkerPoolSize(64)(stdio)
	server.WithQueueSize(1000)(stdio)
	if b.opts.Ready != nil {
		b.opts.Ready("")
	}
	in, out := b.opts.Stdin, b.opts.Stdout
	if in == nil {
		in = os.Stdin
	}
	if out == nil {
		out = os.Stdout
	}
	err := stdio.Listen(ctx, in, out)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// serveAdmin serves the audit API on an owner-only unix socket in the data
// directory, for CLI commands while this process holds the store lock.
func (b *Broker) serveAdmin() (*http.Server, error) {
	path := filepath.Join(b.cfg.DataDir, AdminSocket)
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	ah := audit.Handler(b.ledger)
	mux.Handle(audit.AuditPath, ah)
	mux.Handle(audit.AuditPath+"/", ah)
	b.taskAdmin(mux)
	b.approvalAdmin(mux)
	b.sessionAdmin(mux)
	b.pinAdmin(mux)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return hs, nil
}

// shutdown closes downstreams, writes the last record and closes the store.
func (b *Broker) shutdown(ctx context.Context) {
	b.closeParked(ctx)
	b.parkers.close()
	done := make(chan struct{})
	go func() { _ = b.pool.Close(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		b.log.Warn("downstream servers did not close in time")
	}
	if b.reloader != nil {
		_ = b.reloader.Close()
	}
	if b.candidateReloader != nil {
		_ = b.candidateReloader.Close()
	}
	b.record(ctx, audit.Event{Type: audit.BrokerStopped})
	if _, err := b.ledger.Checkpoint(ctx); err != nil {
		b.log.Warn("closing ledger checkpoint not written", "err", err)
	}
	b.closeStores()
	b.log.Info("broker stopped")
}

func (b *Broker) closeStores() {
	b.closeIdentity()
	if b.store != nil {
		if err := b.store.Close(); err != nil {
			b.log.Warn("store close", "err", err)
		}
		b.store = nil
	}
}

// Addr is the HTTP listen address once serving (useful with port 0).
func (b *Broker) Addr() string {
	if b.listener == nil {
		return ""
	}
	return b.listener.Addr().String()
}

// onPolicyReload records a hot reload's outcome.
func (b *Broker) onPolicyReload(digest string, err error) {
	ctx := context.Background()
	if err != nil {
		b.record(ctx, audit.Event{Type: audit.PolicyRejected, PolicyDigest: digest, Detail: truncate(err.Error(), 2000)})
		b.metrics.PolicyReload(false)
		return
	}
	b.record(ctx, audit.Event{Type: audit.PolicyLoaded, PolicyDigest: digest, Detail: fmt.Sprintf("%d policies (reload)", b.engine.Set().Len())})
	b.metrics.PolicyReload(true)
}

// ReloadPolicies reloads the policy directory now (SIGHUP). An invalid set
// never replaces the valid one; the error lists every problem.
func (b *Broker) ReloadPolicies() (string, error) {
	if b.reloader == nil {
		return b.engine.Set().Digest(), errors.New("no policy directory configured")
	}
	return b.reloader.Reload()
}

// CommitStats reports the store's group-commit counters.
func (b *Broker) CommitStats() store.CommitStats { return b.store.CommitStats() }
