package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// tap wraps a client transport to capture the raw result bytes of chosen
// requests. mcp-go's typed ListTools drops JSON Schema keywords it does not
// model (notes/mcp-go.md pitfall 1); the raw bytes let the broker re-export
// tool definitions byte-exact. Capture is opt-in per call through the
// context, so concurrent requests are never mixed up.
type tap struct {
	transport.Interface
}

type rawSink struct {
	method string
	mu     sync.Mutex
	pages  []json.RawMessage
}

type sinkKey struct{}

func withSink(ctx context.Context, s *rawSink) context.Context {
	return context.WithValue(ctx, sinkKey{}, s)
}

func (t *tap) SendRequest(ctx context.Context, req transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
	resp, err := t.Interface.SendRequest(ctx, req)
	if err == nil && resp != nil && resp.Error == nil {
		if s, ok := ctx.Value(sinkKey{}).(*rawSink); ok && s.method == req.Method {
			s.mu.Lock()
			s.pages = append(s.pages, append(json.RawMessage(nil), resp.Result...))
			s.mu.Unlock()
		}
	}
	return resp, err
}

// The wrappers below keep the optional interfaces mcp-go's client looks for
// on its transport (bidirectional requests, HTTP protocol version, legacy
// requirement, connection loss), exactly as the wrapped transport has them.

type tapStdio struct {
	*tap
	inner *transport.Stdio
	child *stdioChild
}

func (t *tapStdio) SetRequestHandler(h transport.RequestHandler) { t.inner.SetRequestHandler(h) }

// SendRequest reports the request whose answer passed the size limit (and
// so ended the connection) as ErrAnswerTooLarge; the others that fail with
// it keep their transport error.
func (t *tapStdio) SendRequest(ctx context.Context, req transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
	resp, err := t.tap.SendRequest(ctx, req)
	return resp, tooLargeCause(err, t.child.limit.over(), req.ID)
}

// tooLargeCause reports err, a request's failure on a connection that a
// message over the size limit ended, as that limit error when the message
// was the answer to this request (the id); other requests keep err.
func tooLargeCause(err error, over *tooLargeError, id mcp.RequestId) error {
	if err == nil || over == nil || errors.Is(err, ErrAnswerTooLarge) || !over.concerns(id) {
		return err
	}
	return fmt.Errorf("%w (%v)", over, err)
}

// Close closes the child's stdin (mcp-go's transport) and lets it exit.
func (t *tapStdio) Close() error {
	err := t.inner.Close()
	t.child.stop()
	return err
}

// tapHTTP also serves the raw tools/call path (rawcall.go), which needs
// what the client installs on its transport.
type tapHTTP struct {
	*tap
	inner *transport.StreamableHTTP
	raw   rawConn
	log   *slog.Logger
	stop  context.CancelFunc // ends raw.life
	// lost is closed when a raw request finds the session gone (404): the
	// supervisor reconnects, as it does when mcp-go's client finds it.
	lost     chan struct{}
	lostOnce sync.Once
}

// SendRequest reports a request whose answer passed the size limit as
// ErrAnswerTooLarge even where mcp-go does not pass the read error on (a
// resumed answer's stream).
func (t *tapHTTP) SendRequest(ctx context.Context, req transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
	ctx, trip := withTrip(ctx)
	resp, err := t.tap.SendRequest(ctx, req)
	if err != nil && !errors.Is(err, ErrAnswerTooLarge) {
		if over := trip.get(); over != nil {
			return nil, fmt.Errorf("%w (%v)", over, err)
		}
	}
	return resp, err
}

func newTapHTTP(h *transport.StreamableHTTP, d *downstream) *tapHTTP {
	life, stop := context.WithCancel(context.Background())
	t := &tapHTTP{tap: &tap{h}, inner: h, log: d.log, stop: stop, lost: make(chan struct{})}
	t.raw.url, t.raw.hc, t.raw.life = d.spec.URL, d.hc, life
	t.raw.headers, t.raw.headerFunc, t.raw.max = d.spec.Headers, d.spec.headerFunc(), d.pool.maxAnswer
	return t
}

func (t *tapHTTP) RequiresLegacyProtocol() bool { return t.inner.RequiresLegacyProtocol() }

// tapSSE watches the SSE transport's standing stream: when it ends (the
// server went away, or an event passed the answer limit), lost is closed
// and the supervisor reconnects at once, which also ends the calls waiting
// for answers on it (mcp-go would leave them waiting for its response
// timeout).
type tapSSE struct {
	*tap
	inner    *transport.SSE
	lost     chan struct{}
	lostOnce sync.Once
	lostErr  atomic.Pointer[error]
}

func newTapSSE(s *transport.SSE) *tapSSE {
	t := &tapSSE{tap: &tap{s}, inner: s, lost: make(chan struct{})}
	s.SetConnectionLostHandler(func(err error) {
		if err == nil {
			err = errors.New("stream ended")
		}
		t.lostErr.Store(&err)
		t.lostOnce.Do(func() { close(t.lost) })
	})
	return t
}

// streamErr is why the stream ended, or nil.
func (t *tapSSE) streamErr() error {
	if p := t.lostErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (t *tapSSE) SetProtocolVersion(v string) { t.inner.SetProtocolVersion(v) }

// SendRequest reports the request whose answer passed the limit on the
// stream (and so ended it) as ErrAnswerTooLarge; the others that fail with
// it keep their transport error.
func (t *tapSSE) SendRequest(ctx context.Context, req transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
	resp, err := t.tap.SendRequest(ctx, req)
	var over *tooLargeError
	errors.As(t.streamErr(), &over)
	return resp, tooLargeCause(err, over, req.ID)
}

var (
	_ transport.BidirectionalInterface = (*tapStdio)(nil)
	_ transport.BidirectionalInterface = (*tapHTTP)(nil)
	_ transport.HTTPConnection         = (*tapHTTP)(nil)
	_ transport.HTTPConnection         = (*tapSSE)(nil)
)

// tapInProcess is the tap for in-process servers. Their handlers run on the
// caller's goroutine with the caller's context, and mcp-go keeps request
// state (protocol era, HTTP headers, session) in context values: passed
// through, the agent-facing server's values would be read by the
// downstream server as its own. So only cancellation, deadline and this
// package's keys cross.
type tapInProcess struct {
	*tap
}

func (t *tapInProcess) SendRequest(ctx context.Context, req transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
	return t.tap.SendRequest(isolate(ctx), req)
}

func (t *tapInProcess) SendNotification(ctx context.Context, n mcp.JSONRPCNotification) error {
	return t.tap.Interface.SendNotification(isolate(ctx), n)
}

type isolated struct {
	context.Context // for Deadline, Done, Err
}

func isolate(ctx context.Context) context.Context { return isolated{ctx} }

func (c isolated) Value(key any) any {
	switch key.(type) {
	case callerKey, sinkKey:
		return c.Context.Value(key)
	}
	return nil
}
