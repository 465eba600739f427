package tools

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// downstream owns the connection to one server: it connects, keeps the
// server's catalog, restarts with backoff when the server dies, and relays
// what the server sends back during a call to that call's Caller.
type downstream struct {
	spec Spec
	pool *Pool
	log  *slog.Logger
	hc   *http.Client // the pool's (or one with spec.TLS), answers capped

	resync chan struct{}

	mu       sync.RWMutex
	client   *client.Client
	up       bool
	lastErr  error
	cmd      *exec.Cmd // the current stdio child, for killing its process group
	inflight map[uint64]*inflight
	tokens   map[string]*inflight // broker progress token -> call
	seq      uint64
}

type inflight struct {
	caller Caller
	token  mcp.ProgressToken // the agent's own progress token, or nil
}

const (
	minBackoff   = 250 * time.Millisecond
	maxBackoff   = 30 * time.Second
	syncInterval = 30 * time.Second
	initTimeout  = 15 * time.Second
	// stableAfter is how long a connection must last for the reconnect
	// backoff to start over.
	stableAfter = 10 * time.Second
)

func newDownstream(spec Spec, p *Pool) *downstream {
	return &downstream{
		spec:     spec,
		pool:     p,
		hc:       limitAnswers(httpClientFor(p.httpClient, spec), p.maxAnswer),
		log:      p.log.With("server", spec.Name),
		resync:   make(chan struct{}, 1),
		inflight: map[uint64]*inflight{},
		tokens:   map[string]*inflight{},
	}
}

// run connects and reconnects until ctx ends. firstDone is closed after the
// first connection attempt, whatever its outcome.
func (d *downstream) run(ctx context.Context, firstDone chan<- struct{}) {
	backoff := minBackoff
	first := true
	for ctx.Err() == nil {
		connCtx, cancel := context.WithCancel(ctx)
		c, dead, err := d.connect(connCtx)
		if err == nil {
			err = d.sync(connCtx, c)
			if err != nil {
				_ = c.Close()
			}
		}
		if err != nil {
			if first {
				first = false
				close(firstDone)
			}
			cancel()
			d.killGroup()
			d.setDown(err)
			d.log.Warn("downstream server unavailable", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		d.mu.Lock()
		d.client, d.up, d.lastErr = c, true, nil
		d.mu.Unlock()
		d.log.Info("downstream server connected", "transport", d.spec.Transport, "protocol", c.ProtocolVersion())
		d.pool.changed()
		if first {
			// Start returns with the server up and its catalog in place.
			first = false
			close(firstDone)
		}
		connectedAt := time.Now()
		stopListen := d.listen(connCtx, c)

		reason := d.watch(connCtx, c, dead)
		stopListen()
		d.setDown(reason)
		d.pool.changed()
		_ = c.Close()
		d.killGroup()
		cancel()
		if ctx.Err() != nil {
			return
		}
		// A server that dies right after starting must not be respawned
		// four times a second: the backoff only resets after a connection
		// that lasted.
		if time.Since(connectedAt) > stableAfter {
			backoff = minBackoff
		} else {
			backoff = min(backoff*2, maxBackoff)
		}
		d.log.Warn("downstream server lost; reconnecting", "reason", reason, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// watch blocks while the connection is healthy and returns why it ended.
func (d *downstream) watch(ctx context.Context, c *client.Client, dead <-chan struct{}) error {
	t := time.NewTicker(syncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-dead:
			if d.spec.Transport == TransportStdio {
				if ts, ok := c.GetTransport().(*tapStdio); ok {
					if over := ts.child.limit.over(); over != nil {
						return over
					}
					select { // stdout may end just before the exit is seen
					case <-ts.child.exited:
						if err := ts.child.exitErr; err != nil {
							return fmt.Errorf("process exited: %w", err)
						}
					case <-time.After(2 * stdioDrain):
						return errors.New("the server closed its stdout")
					}
				}
				return errors.New("process exited")
			}
			if ts, ok := c.GetTransport().(*tapSSE); ok {
				return fmt.Errorf("the server's SSE stream ended: %w", ts.streamErr())
			}
			return errors.New("the server ended the session (404)")
		case <-d.resync:
		case <-t.C:
		}
		if err := d.sync(ctx, c); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("re-sync failed: %w", err)
		}
		d.pool.changed()
	}
}

func (d *downstream) setDown(err error) {
	d.mu.Lock()
	d.client, d.up, d.lastErr = nil, false, err
	d.mu.Unlock()
	d.pool.setCatalog(d.spec.Name, nil)
}

// connect starts a client and runs the MCP handshake. dead is closed when a
// stdio child exits, when a streamable HTTP session is found gone by a raw
// request, or when an SSE transport's stream ends; it is nil for
// in-process servers.
func (d *downstream) connect(ctx context.Context) (*client.Client, <-chan struct{}, error) {
	opts := []client.ClientOption{
		client.WithElicitationHandler(d),
		client.WithSamplingHandler(d),
		client.WithRootsHandler(d),
		client.WithDiscoverTimeout(3 * time.Second),
	}
	if d.spec.ProtocolVersion != "" {
		opts = append(opts, client.WithProtocolVersion(d.spec.ProtocolVersion))
	}
	var (
		t    transport.Interface
		dead chan struct{}
	)
	switch d.spec.Transport {
	case TransportStdio:
		st, child, done, err := d.stdioTransport(ctx)
		if err != nil {
			return nil, nil, err
		}
		t, dead = &tapStdio{tap: &tap{st}, inner: st, child: child}, done
	case TransportStreamableHTTP:
		h, err := transport.NewStreamableHTTP(d.spec.URL,
			transport.WithHTTPBasicClient(d.hc),
			transport.WithHTTPHeaders(d.spec.Headers),
			transport.WithHTTPHeaderFunc(d.spec.headerFunc()),
			transport.WithHTTPLogger(d.log),
		)
		if err != nil {
			return nil, nil, fmt.Errorf("streamable http transport: %w", err)
		}
		th := newTapHTTP(h, d)
		t, dead = th, th.lost
	case TransportSSE:
		s, err := transport.NewSSE(d.spec.URL,
			transport.WithHeaders(d.spec.Headers),
			transport.WithHeaderFunc(d.spec.headerFunc()),
			transport.WithHTTPClient(d.hc),
		)
		if err != nil {
			return nil, nil, fmt.Errorf("sse transport: %w", err)
		}
		ts := newTapSSE(s)
		t, dead = ts, ts.lost
	case TransportInProcess:
		d.pool.inprocMu.Lock() // mcp-go in-process session IDs are UnixNano: create serially
		ip := transport.NewInProcessTransportWithOptions(d.spec.Server,
			transport.WithElicitationHandler(d),
			transport.WithSamplingHandler(d),
			transport.WithRootsHandler(d),
		)
		time.Sleep(time.Microsecond)
		d.pool.inprocMu.Unlock()
		t = &tapInProcess{&tap{ip}}
	default:
		return nil, nil, fmt.Errorf("transport %q: %w", d.spec.Transport, errors.ErrUnsupported)
	}
	c := client.NewClient(t, opts...)
	if err := c.Start(ctx); err != nil {
		return nil, nil, fmt.Errorf("start: %w", err)
	}
	c.OnNotification(d.onNotification)
	ictx, cancel := context.WithTimeout(ctx, initTimeout)
	defer cancel()
	req := mcp.InitializeRequest{}
	req.Params.ProtocolVersion = d.spec.ProtocolVersion
	req.Params.ClientInfo = mcp.Implementation{Name: "mcpbroker", Version: d.pool.version}
	req.Params.Capabilities = mcp.ClientCapabilities{
		Elicitation: &mcp.ElicitationCapability{},
		Roots: &struct {
			ListChanged bool `json:"listChanged,omitempty"`
		}{},
		Sampling: &mcp.SamplingCapability{},
	}
	if _, err := c.Initialize(ictx, req); err != nil {
		_ = c.Close()
		return nil, nil, fmt.Errorf("initialize: %w", err)
	}
	return c, dead, nil
}

// stdioTransport starts the child process with a lifecycle context (never
// a request context: cancelling it kills the child), a minimal environment,
// its own process group, and stderr captured line by line into the log,
// and returns an mcp-go transport over its stdin and stdout. The broker
// spawns the child itself, rather than through mcp-go, so that what the
// child writes to stdout passes a limit: one message (one line) over the
// pool's answer limit ends the connection (mcp-go's reader would buffer a
// line of any length). dead is closed when the child exits (and has been
// reaped), or when the limit has ended the connection.
func (d *downstream) stdioTransport(ctx context.Context) (*transport.Stdio, *stdioChild, chan struct{}, error) {
	var files []*os.File // every pipe end, closed on failure
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	fail := func(err error) (*transport.Stdio, *stdioChild, chan struct{}, error) {
		for _, f := range files {
			_ = f.Close()
		}
		return nil, nil, nil, err
	}
	errR, errW, err := pipe()
	if err != nil {
		return fail(err)
	}
	inR, inW, err := pipe()
	if err != nil {
		return fail(err)
	}
	outR, outW, err := pipe()
	if err != nil {
		return fail(err)
	}
	cmd := exec.CommandContext(ctx, d.spec.Command, d.spec.Args...)
	cmd.Env = childEnv(d.spec.Env)
	cmd.Dir = d.spec.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: npx and friends start grandchildren.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 3 * time.Second
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("spawn %s: %w", d.spec.Command, err))
	}
	// The child holds its ends from here on; reads end when every holder
	// (the child and its descendants) has exited.
	_, _, _ = inR.Close(), outW.Close(), errW.Close()
	d.mu.Lock()
	d.cmd = cmd
	d.mu.Unlock()

	child := &stdioChild{cmd: cmd, stdout: outR, exited: make(chan struct{})}
	dead := make(chan struct{})
	var deadOnce sync.Once
	end := func() { deadOnce.Do(func() { close(dead) }) }
	go func() {
		// The connection ends when the server process does, even if a
		// descendant still holds its pipes (the supervisor then kills
		// the process group). What the server wrote before it exited is
		// in the stdout pipe: mcp-go's reader gets it all, then EOF, and
		// the connection ends there, so answers written just before the
		// exit reach their calls. A descendant that still holds the
		// pipes keeps them open only until nothing has come for
		// stdioDrain (stdioDrainMax at most).
		child.exitErr = cmd.Wait() // reaps the child
		close(child.exited)
		// A read in progress ends if nothing more comes; lineLimit sets
		// the deadline again before each read from now on.
		_ = outR.SetReadDeadline(time.Now().Add(stdioDrain))
		_ = errR.SetReadDeadline(time.Now().Add(2 * stdioDrain))
		select {
		case <-dead:
		case <-time.After(stdioDrainMax + 5*time.Second):
			end() // mcp-go's reader is not reading: end it anyway
		}
	}()
	go d.logStderr(errR)
	child.limit = &lineLimit{r: outR, f: outR, exited: child.exited, max: d.pool.maxAnswer, eof: end, tripped: func(err error) {
		d.log.Error("downstream message over the size limit; ending the connection", "err", err)
		_ = outR.Close() // the child's next write fails: it need not be waited for
		end()
	}}
	stall := d.spec.StdinTimeout
	if stall <= 0 {
		stall = stdioWriteTimeout
	}
	st := transport.NewIO(child.limit, &stallWriter{f: inW, timeout: stall, stalled: func() {
		d.log.Error("downstream server stopped reading its stdin; ending the connection", "after", stall)
		end()
	}}, nil)
	if err := st.Start(ctx); err != nil {
		_ = st.Close()
		child.stop()
		return nil, nil, nil, fmt.Errorf("start %s: %w", d.spec.Command, err)
	}
	return st, child, dead, nil
}

// stdioChild is a stdio server process the broker started.
type stdioChild struct {
	cmd     *exec.Cmd
	stdout  *os.File
	limit   *lineLimit
	exited  chan struct{} // closed once the process has exited and been reaped
	exitErr error         // cmd.Wait's, set before exited is closed
}

// stderrLine is how much of one stderr line is logged; the rest of a
// longer line is skipped (and the line marked truncated), so that a server
// writing a huge line neither grows the broker's memory nor stops its
// stderr from being read.
const stderrLine = 64 << 10

// logStderr logs a stdio child's stderr line by line until every holder of
// the pipe has closed it.
func (d *downstream) logStderr(r *os.File) {
	defer r.Close()
	br := bufio.NewReaderSize(r, stderrLine+2) // a line of stderrLine bytes and its CRLF fit
	for {
		line, err := br.ReadSlice('\n')
		truncated := false
		if errors.Is(err, bufio.ErrBufferFull) {
			truncated = true
			d.log.Info("downstream stderr", "line", strings.TrimRight(string(line), "\r\n"), "truncated", true)
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
		}
		if !truncated && len(line) > 0 {
			d.log.Info("downstream stderr", "line", strings.TrimRight(string(line), "\r\n"))
		}
		if err != nil {
			return
		}
	}
}

// After a stdio child's exit its stdout is read until nothing has come for
// stdioDrain, or stdioDrainMax has passed (a descendant may hold the pipe
// open, and even write to it); its stderr for 2×stdioDrain.
const (
	stdioDrain    = 250 * time.Millisecond
	stdioDrainMax = 5 * time.Second
)

// stdioWriteTimeout bounds how long a request written to a stdio child's
// stdin may make no progress: a server that stops reading it (its pipe
// full) ends the connection rather than holding every call, and the
// re-sync, for as long as it lives. Spec.StdinTimeout overrides it per
// server. A var for the tests.
var stdioWriteTimeout = 30 * time.Second

// stallWriter writes to a stdio child's stdin in chunks, each with its own
// deadline, so that a server reading slowly but steadily is not cut off;
// a chunk that times out has left a request half written, so the
// connection is ended (stalled).
type stallWriter struct {
	f       *os.File
	timeout time.Duration
	stalled func()
}

const stallChunk = 16 << 10

func (w *stallWriter) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		chunk := p[written:min(len(p), written+stallChunk)]
		_ = w.f.SetWriteDeadline(time.Now().Add(w.timeout))
		n, err := w.f.Write(chunk)
		written += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			w.stalled()
			return written, fmt.Errorf("the server has not read its stdin for %v: %w", w.timeout, err)
		}
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

func (w *stallWriter) Close() error { return w.f.Close() }

// Stdio children get this long to exit once their stdin is closed, then
// this long after SIGTERM (mcp-go's own timings); the supervisor then
// kills what is left of the process group.
const (
	stdioExitGrace = 2 * time.Second
	stdioTermGrace = 3 * time.Second
)

// stop ends the child after its stdin was closed: it waits for it to exit,
// sends SIGTERM to its process group if it does not, and waits again. The
// stdout pipe is closed last, which ends mcp-go's reader even if a
// descendant still holds the other end.
func (c *stdioChild) stop() {
	defer c.stdout.Close()
	select {
	case <-c.exited:
		return
	case <-time.After(stdioExitGrace):
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(stdioTermGrace):
	}
}

// lineLimit passes a stdio child's stdout through and fails, with
// ErrAnswerTooLarge, at the first line (message) longer than max bytes.
// The bytes before the one that passes the limit are still delivered
// (whole lines among them are answers to other requests); the next read
// fails, and calls tripped. One reader (mcp-go's) calls Read; over may be
// called by others.
type lineLimit struct {
	r       io.Reader
	max     int64
	n       int64 // bytes of the current line so far
	head    idPrefix
	pending *tooLargeError // found, not yet returned
	err     *tooLargeError // returned; set before passed
	passed  atomic.Bool
	tripped func(error)
	eof     func() // called when the stream ends (EOF, or the drain after the child's exit)
	// Once exited is closed, each read gets a deadline on f: stdioDrain
	// from now, and never past stdioDrainMax after the exit was seen.
	f       *os.File
	exited  <-chan struct{}
	drainBy time.Time
}

func (l *lineLimit) Read(p []byte) (int, error) {
	if l.pending != nil {
		l.err, l.pending = l.pending, nil
		l.passed.Store(true)
		if l.tripped != nil {
			l.tripped(l.err)
		}
	}
	if l.passed.Load() {
		return 0, l.err
	}
	if l.exited != nil {
		select {
		case <-l.exited:
			now := time.Now()
			if l.drainBy.IsZero() {
				l.drainBy = now.Add(stdioDrainMax)
			}
			by := now.Add(stdioDrain)
			if by.After(l.drainBy) {
				by = l.drainBy
			}
			_ = l.f.SetReadDeadline(by)
		default:
		}
	}
	n, err := l.r.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = io.EOF // the child exited and its output is drained
	}
	if err != nil && l.eof != nil {
		defer l.eof()
	}
	if l.max <= 0 {
		return n, err
	}
	b := p[:n]
	for off := 0; off < n; {
		i := bytes.IndexByte(b[off:], '\n')
		line := b[off:]
		if i >= 0 {
			line = b[off : off+i]
		}
		if l.n+int64(len(line)) > l.max {
			over := off + int(l.max-l.n) // the first byte past the limit
			l.head.addAll(line[:over-off])
			l.pending = newTooLarge("a message on the server's stdout", l.max, l.head.bytes())
			if over == 0 {
				return l.Read(p)
			}
			return over, nil
		}
		if i < 0 {
			l.head.addAll(line)
			l.n += int64(len(line))
			break
		}
		l.n = 0
		l.head.reset()
		off += i + 1
	}
	return n, err
}

// over returns the error that ended the connection, if the limit did.
func (l *lineLimit) over() *tooLargeError {
	if l.passed.Load() {
		return l.err
	}
	return nil
}

// childEnv is the environment of a stdio child: a few variables programs
// need to run, plus the configured ones. The broker's own environment (which
// may hold tokens) is not inherited.
func childEnv(extra map[string]string) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "TZ", "NODE_PATH", "GOCACHE", "GOPATH"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// sync fetches the server's catalog and hands it to the pool.
func (d *downstream) sync(ctx context.Context, c *client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, initTimeout)
	defer cancel()
	caps := c.GetServerCapabilities()
	cat := &serverCatalog{}
	if caps.Tools != nil {
		sink := &rawSink{method: string(mcp.MethodToolsList)}
		if _, err := c.ListTools(withSink(ctx, sink), mcp.ListToolsRequest{}); err != nil {
			return fmt.Errorf("tools/list: %w", err)
		}
		tools, err := parseTools(&d.spec, sink.pages)
		if err != nil {
			return err
		}
		cat.tools = tools
	}
	if caps.Resources != nil {
		res, err := c.ListResources(ctx, mcp.ListResourcesRequest{})
		if err != nil {
			return fmt.Errorf("resources/list: %w", err)
		}
		for _, r := range res.Resources {
			cat.resources = append(cat.resources, Resource{Server: d.spec.Name, Def: r})
		}
		tres, err := c.ListResourceTemplates(ctx, mcp.ListResourceTemplatesRequest{})
		if err != nil {
			d.log.Debug("resources/templates/list failed", "err", err)
		} else {
			for _, r := range tres.ResourceTemplates {
				cat.templates = append(cat.templates, Template{Server: d.spec.Name, Def: r})
			}
		}
	}
	if caps.Prompts != nil {
		res, err := c.ListPrompts(ctx, mcp.ListPromptsRequest{})
		if err != nil {
			return fmt.Errorf("prompts/list: %w", err)
		}
		for _, p := range res.Prompts {
			name := p.Name
			p.Name = d.spec.Prefix + name
			cat.prompts = append(cat.prompts, Prompt{Server: d.spec.Name, Name: name, Exposed: p.Name, Def: p})
		}
	}
	d.pool.setCatalog(d.spec.Name, cat)
	return nil
}

// current returns the connected client or ErrUnavailable.
func (d *downstream) current() (*client.Client, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if !d.up || d.client == nil {
		if d.lastErr != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, d.spec.Name, d.lastErr)
		}
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, d.spec.Name)
	}
	return d.client, nil
}

// begin registers an in-flight call and returns the broker's progress
// token for it (nil if the agent asked for no progress) and a release func.
func (d *downstream) begin(ctx context.Context, agentToken mcp.ProgressToken) (mcp.ProgressToken, func()) {
	c, _ := callerFrom(ctx)
	d.mu.Lock()
	d.seq++
	id := d.seq
	f := &inflight{caller: c, token: agentToken}
	d.inflight[id] = f
	var tok mcp.ProgressToken
	key := ""
	if agentToken != nil {
		key = fmt.Sprintf("mcpb-%s-%d", d.pool.instance, id)
		d.tokens[key] = f
		tok = key
	}
	d.mu.Unlock()
	return tok, func() {
		d.mu.Lock()
		delete(d.inflight, id)
		if key != "" {
			delete(d.tokens, key)
		}
		d.mu.Unlock()
	}
}

// callerFor finds the agent a server-initiated request belongs to: the call
// whose context carried it (streamable HTTP, in-process, MRTR), or else the
// only call in flight on this server. With several calls in flight and no
// context there is no safe answer, and the request is refused rather than
// shown to the wrong agent.
func (d *downstream) callerFor(ctx context.Context) (Caller, error) {
	if c, ok := callerFrom(ctx); ok {
		return c, nil
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	var only Caller
	n := 0
	// Every call in flight counts, with or without a Caller: the request
	// may belong to one that has none.
	for _, f := range d.inflight {
		only = f.caller
		n++
	}
	if n == 1 && only != nil {
		return only, nil
	}
	return nil, fmt.Errorf("%w: %d calls in flight on %s", ErrNoCaller, n, d.spec.Name)
}

func (d *downstream) Elicit(ctx context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	c, err := d.callerFor(ctx)
	if err != nil {
		d.log.Warn("elicitation from downstream refused", "err", err)
		return nil, err
	}
	return c.Elicit(ctx, req)
}

func (d *downstream) CreateMessage(ctx context.Context, req mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
	c, err := d.callerFor(ctx)
	if err != nil {
		d.log.Warn("sampling request from downstream refused", "err", err)
		return nil, err
	}
	return c.CreateMessage(ctx, req)
}

func (d *downstream) ListRoots(ctx context.Context, req mcp.ListRootsRequest) (*mcp.ListRootsResult, error) {
	c, err := d.callerFor(ctx)
	if err != nil {
		d.log.Debug("roots request from downstream refused", "err", err)
		return nil, err
	}
	return c.ListRoots(ctx, req)
}

// onNotification runs on the transport's reader goroutine: it must not
// block (notes/mcp-go.md pitfall 12). Caller.Notify is non-blocking.
func (d *downstream) onNotification(n mcp.JSONRPCNotification) {
	switch n.Method {
	case string(mcp.MethodNotificationProgress):
		params := n.Params.AdditionalFields
		key := fmt.Sprint(params["progressToken"])
		d.mu.RLock()
		f := d.tokens[key]
		d.mu.RUnlock()
		if f == nil || f.caller == nil {
			return
		}
		out := make(map[string]any, len(params))
		for k, v := range params {
			out[k] = v
		}
		out["progressToken"] = f.token
		f.caller.Notify(n.Method, out)
	case "notifications/message":
		if c, err := d.callerFor(context.Background()); err == nil {
			c.Notify(n.Method, n.Params.AdditionalFields)
			return
		}
		d.log.Info("downstream log message", "params", n.Params.AdditionalFields)
	case string(mcp.MethodNotificationToolsListChanged),
		string(mcp.MethodNotificationResourcesListChanged),
		string(mcp.MethodNotificationPromptsListChanged),
		// The listen stream is up: re-sync once, for changes made between
		// the first sync and the subscription.
		"notifications/subscriptions/acknowledged":
		select {
		case d.resync <- struct{}{}:
		default:
		}
	default:
		d.log.Debug("downstream notification ignored", "method", n.Method)
	}
}

// isTransportError tells a dead connection from an error the server
// returned.
func isTransportError(err error) bool {
	if err == nil {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return true
	}
	s := err.Error()
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.Contains(s, "transport closed") || strings.Contains(s, "connection refused") ||
		strings.Contains(s, "broken pipe") || strings.Contains(s, "connection reset")
}

func newHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	t.IdleConnTimeout = 90 * time.Second
	// No Client.Timeout: it would also cut long SSE streams. Calls carry
	// context deadlines instead.
	return &http.Client{Transport: t}
}

// killGroup ends whatever is left of the stdio child's process group after
// the client closed it: grandchildren (npx, shells) would otherwise outlive
// every restart.
func (d *downstream) killGroup() {
	d.mu.Lock()
	cmd := d.cmd
	d.cmd = nil
	d.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// listen opens a 2026-07-28 subscriptions/listen stream on HTTP
// downstreams, so that list_changed arrives at once rather than at the next
// periodic re-sync (stdio and in-process servers notify on their own
// connection; legacy HTTP servers would need a GET stream, which forces the
// legacy era, so they rely on the re-sync). It returns the stop func.
func (d *downstream) listen(ctx context.Context, c *client.Client) func() {
	if d.spec.Transport != TransportStreamableHTTP || !mcp.IsModernProtocol(c.ProtocolVersion()) {
		return func() {}
	}
	caps := c.GetServerCapabilities()
	filter := mcp.SubscriptionFilter{
		ToolsListChanged:     caps.Tools != nil && caps.Tools.ListChanged,
		PromptsListChanged:   caps.Prompts != nil && caps.Prompts.ListChanged,
		ResourcesListChanged: caps.Resources != nil && caps.Resources.ListChanged,
	}
	if !filter.ToolsListChanged && !filter.PromptsListChanged && !filter.ResourcesListChanged {
		return func() {}
	}
	stop, err := c.ListenAsync(ctx, filter, func(err error) {
		d.log.Info("downstream list_changed stream ended; periodic re-sync continues", "err", err)
	})
	if err != nil {
		d.log.Info("downstream list_changed stream not available; periodic re-sync only", "err", err)
		return func() {}
	}
	return stop
}
