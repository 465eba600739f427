package tools

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// Pool is the set of downstream servers and their merged catalog. Start
// connects; Close disconnects and stops every child process. The catalog is
// an immutable Snapshot swapped on every change; OnChange observers are told.
type Pool struct {
	log        *slog.Logger
	version    string
	maxAnswer  int64
	instance   string
	httpClient *http.Client
	order      []string
	ds         map[string]*downstream
	inprocMu   sync.Mutex

	catMu  sync.Mutex
	cats   map[string]*serverCatalog
	owners map[string]string
	snap   atomic.Pointer[Snapshot]

	changeMu sync.Mutex
	onChange []func(*Snapshot)

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Options configures a Pool.
type Options struct {
	Logger  *slog.Logger
	Version string // sent as clientInfo.version
	// MaxAnswerBytes caps a streamable HTTP downstream's answer to one
	// request, one message from a stdio downstream, and one event on an
	// SSE stream (DefaultMaxAnswerBytes if 0).
	MaxAnswerBytes int64
}

// NewPool validates specs and returns an unstarted pool.
func NewPool(specs []Spec, opts Options) (*Pool, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxAnswerBytes <= 0 {
		opts.MaxAnswerBytes = DefaultMaxAnswerBytes
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	p := &Pool{
		log:        opts.Logger,
		version:    opts.Version,
		maxAnswer:  opts.MaxAnswerBytes,
		instance:   hex.EncodeToString(b[:]),
		httpClient: newHTTPClient(),
		ds:         map[string]*downstream{},
		cats:       map[string]*serverCatalog{},
		owners:     map[string]string{},
	}
	p.snap.Store(merge(nil, nil, map[string]string{}))
	var errs []error
	for _, s := range specs {
		if err := s.Transport.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("server %q: %w", s.Name, err))
			continue
		}
		if _, dup := p.ds[s.Name]; dup {
			errs = append(errs, fmt.Errorf("server %q: configured twice", s.Name))
			continue
		}
		if s.Transport == TransportInProcess && s.Server == nil {
			errs = append(errs, fmt.Errorf("server %q: in-process without a server", s.Name))
			continue
		}
		p.order = append(p.order, s.Name)
		p.ds[s.Name] = newDownstream(s, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// OnChange registers f to be called (synchronously, serialized) with every
// new snapshot.
func (p *Pool) OnChange(f func(*Snapshot)) {
	p.changeMu.Lock()
	p.onChange = append(p.onChange, f)
	p.changeMu.Unlock()
}

// Start connects to every server and waits until each has made its first
// attempt or wait has passed. A server that is down does not stop the
// broker: it keeps retrying with backoff. A name collision between the
// servers that came up is an error.
func (p *Pool) Start(ctx context.Context, wait time.Duration) error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	var firsts []chan struct{}
	for _, name := range p.order {
		d := p.ds[name]
		first := make(chan struct{})
		firsts = append(firsts, first)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			d.run(ctx, first)
		}()
	}
	deadline := time.After(wait)
	for _, f := range firsts {
		select {
		case <-f:
		case <-deadline:
			p.log.Warn("some downstream servers are still connecting")
			return nil
		}
	}
	p.catMu.Lock()
	errs := collisions(p.order, p.cats)
	p.catMu.Unlock()
	return errors.Join(errs...)
}

// Close disconnects every server and waits for child processes to exit.
func (p *Pool) Close() error {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	p.httpClient.CloseIdleConnections()
	return nil
}

// Snapshot returns the current merged catalog.
func (p *Pool) Snapshot() *Snapshot { return p.snap.Load() }

// Status reports, per server, whether it is connected.
func (p *Pool) Status() map[string]error {
	out := map[string]error{}
	for _, name := range p.order {
		_, err := p.ds[name].current()
		out[name] = err
	}
	return out
}

func (p *Pool) setCatalog(server string, c *serverCatalog) {
	p.catMu.Lock()
	if c == nil {
		delete(p.cats, server)
	} else {
		p.cats[server] = c
	}
	s := merge(p.order, p.cats, p.owners)
	p.snap.Store(s)
	p.catMu.Unlock()
	for _, w := range s.Withheld {
		p.log.Warn("downstream name withheld: another server owns it", "name", w)
	}
}

func (p *Pool) changed() {
	s := p.snap.Load()
	p.changeMu.Lock()
	defer p.changeMu.Unlock()
	for _, f := range p.onChange {
		f(s)
	}
}

func (p *Pool) server(name string) (*downstream, error) {
	d, ok := p.ds[name]
	if !ok {
		return nil, fmt.Errorf("%w: server %q", ErrUnknownTarget, name)
	}
	return d, nil
}

// forward sends one request to server: the call is registered in flight
// (so requests the server sends back find their agent), the agent's
// progress token is replaced by a broker token, and the broker's own _meta
// (WithExtraMeta) is added. A dead connection becomes ErrUnavailable and
// asks the supervisor to reconnect.
func forward[T any](ctx context.Context, p *Pool, server string, meta *mcp.Meta, send func(c *client.Client, meta *mcp.Meta) (T, error)) (T, error) {
	var zero T
	d, err := p.server(server)
	if err != nil {
		return zero, err
	}
	c, err := d.current()
	if err != nil {
		return zero, err
	}
	var agentToken mcp.ProgressToken
	if meta != nil {
		agentToken = meta.ProgressToken
	}
	tok, done := d.begin(ctx, agentToken)
	defer done()
	res, err := send(c, withExtra(outboundMeta(meta, tok), extraMeta(ctx)))
	if errors.Is(err, ErrAnswerTooLarge) {
		// The server answered, too much: a failed call, not a lost
		// connection.
		return zero, fmt.Errorf("%s: %w", server, err)
	}
	if err != nil && isTransportError(err) && ctx.Err() == nil {
		d.kick()
		return zero, fmt.Errorf("%w: %s: %v", ErrUnavailable, server, err)
	}
	return res, err
}

// CallTool forwards a tools/call for t with the agent's raw argument bytes.
// The agent's progress token is replaced by a broker token and restored on
// the way back; meta otherwise passes through. The context should carry a
// Caller (WithCaller) so that requests the server sends back reach the
// right agent; cancelling ctx cancels the downstream call.
func (p *Pool) CallTool(ctx context.Context, t *Tool, args []byte, meta *mcp.Meta) (*mcp.CallToolResult, error) {
	return forward(ctx, p, t.Server, meta, func(c *client.Client, m *mcp.Meta) (*mcp.CallToolResult, error) {
		return callTool(ctx, c, t, args, m)
	})
}

// callTool sends one tools/call through mcp-go's client and cleans the
// result.
func callTool(ctx context.Context, c *client.Client, t *Tool, args []byte, m *mcp.Meta) (*mcp.CallToolResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = t.Name
	req.Params.RawArguments = args
	req.Params.Meta = m
	res, err := c.CallTool(ctx, req)
	if res != nil {
		cleanResult(&res.Result)
	}
	return res, err
}

// cleanResult removes what belongs to the downstream hop rather than to the
// answer: protocol-level _meta (the downstream's serverInfo, protocol
// version) and the result type, which the face sets for the agent's own era.
func cleanResult(r *mcp.Result) {
	r.ResultType = ""
	if r.Meta == nil {
		return
	}
	for k := range r.Meta.AdditionalFields {
		if strings.HasPrefix(k, "io.modelcontextprotocol/") {
			delete(r.Meta.AdditionalFields, k)
		}
	}
	if r.Meta.ProgressToken == nil && len(r.Meta.AdditionalFields) == 0 {
		r.Meta = nil
	}
}

// ReadResource forwards resources/read to server.
func (p *Pool) ReadResource(ctx context.Context, server, uri string, meta *mcp.Meta) (*mcp.ReadResourceResult, error) {
	return forward(ctx, p, server, meta, func(c *client.Client, m *mcp.Meta) (*mcp.ReadResourceResult, error) {
		req := mcp.ReadResourceRequest{}
		req.Params.URI = uri
		req.Params.Meta = m
		return c.ReadResource(ctx, req)
	})
}

// GetPrompt forwards prompts/get for pr.
func (p *Pool) GetPrompt(ctx context.Context, pr *Prompt, args map[string]string, meta *mcp.Meta) (*mcp.GetPromptResult, error) {
	return forward(ctx, p, pr.Server, meta, func(c *client.Client, m *mcp.Meta) (*mcp.GetPromptResult, error) {
		req := mcp.GetPromptRequest{}
		req.Params.Name = pr.Name
		req.Params.Arguments = args
		req.Params.Meta = m
		res, err := c.GetPrompt(ctx, req)
		if res != nil {
			cleanResult(&res.Result)
		}
		return res, err
	})
}

// Complete forwards completion/complete to server, with ref already
// translated to the server's own names.
func (p *Pool) Complete(ctx context.Context, server string, params mcp.CompleteParams) (*mcp.CompleteResult, error) {
	// In flight like any call, so callerFor never guesses past it.
	return forward(ctx, p, server, nil, func(c *client.Client, _ *mcp.Meta) (*mcp.CompleteResult, error) {
		req := mcp.CompleteRequest{}
		req.Params = params
		return c.Complete(ctx, req)
	})
}

// TemplateServer finds which server's resource template matches uri.
func (s *Snapshot) TemplateServer(uri string) (string, bool) {
	for _, t := range s.Templates {
		if t.Def.URITemplate != nil {
			if vals := t.Def.URITemplate.Match(uri); vals != nil {
				return t.Server, true
			}
		}
	}
	return "", false
}

// kick asks the supervisor to re-check the connection now.
func (d *downstream) kick() {
	select {
	case d.resync <- struct{}{}:
	default:
	}
}

// outboundMeta copies the agent's _meta for the downstream request, with
// the progress token replaced and broker-internal keys removed.
func outboundMeta(in *mcp.Meta, tok mcp.ProgressToken) *mcp.Meta {
	if in == nil && tok == nil {
		return nil
	}
	out := &mcp.Meta{ProgressToken: tok}
	if in != nil && len(in.AdditionalFields) > 0 {
		out.AdditionalFields = make(map[string]any, len(in.AdditionalFields))
		for k, v := range in.AdditionalFields {
			// Protocol-level keys are the client's own business: the
			// downstream client sets its own protocol version and
			// capabilities. Broker keys never leave the broker.
			if strings.HasPrefix(k, "io.modelcontextprotocol/") || strings.HasPrefix(k, "io.mcpbroker/") {
				continue
			}
			out.AdditionalFields[k] = v
		}
	}
	return out
}

func withExtra(m *mcp.Meta, extra map[string]any) *mcp.Meta {
	if len(extra) == 0 {
		return m
	}
	if m == nil {
		m = &mcp.Meta{}
	}
	if m.AdditionalFields == nil {
		m.AdditionalFields = make(map[string]any, len(extra))
	}
	for k, v := range extra {
		m.AdditionalFields[k] = v
	}
	return m
}
