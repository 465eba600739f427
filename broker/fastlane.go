package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// The fast lane serves the most common request, a tools/call over
// streamable HTTP (2025-11-25 with a session, or 2026-07-28), without
// mcp-go's request machinery (which parses each message four or five times
// and starts a goroutine and channels per request): the guard has already
// authenticated the request, read the body and checked the session; the lane
// parses the envelope once, runs the same tool pipeline (toolHandler) and
// writes the JSON-RPC response itself.
//
// Anything the lane does not handle goes to mcp-go unchanged: other
// methods, batches, progress tokens, log levels, MRTR state, unknown tools,
// the broker's own tools, task-augmented tools, and whatever mcp-go would
// refuse. And when a 2025-11-25 call turns out to need the agent's session
// mid-call (a downstream's elicitation, sampling, roots or notification, or
// an in-band approval prompt), the lane hands the HTTP request over to
// mcp-go, whose tool handler adopts the call in flight (adoptKey): the relay
// then runs on mcp-go's session exactly as it does for a call that came
// through mcp-go, and mcp-go writes the response. If mcp-go refuses the
// handed-over request instead (the session ended meanwhile), its answer is
// discarded, the relay fails, and the lane answers with the call's result.
// A 2026-07-28 call is never handed over: its relays are MRTR results.
type fastLane struct {
	mu       sync.Mutex
	tools    map[string]server.ServerTool  // exposed name → definition and pipeline
	mirrored map[string]bool               // exposed names whose schema binds Mcp-Param-* headers
	inflight map[string]context.CancelFunc // session + request id → cancel
	// lastSlow is when each session last went through mcp-go (which
	// keeps its idle-session clock): the lane sends a session's request
	// there when that is older than touchAge (newFastLane).
	lastSlow sync.Map // session ID → *atomic.Int64 (unix nanos)
	touchAge time.Duration

	served, handedOver atomic.Int64 // calls taken; of those, handed to mcp-go
}

// newFastLane makes the lane. A session's 2025-11-25 calls take the lane
// while mcp-go's idle clock for it is younger than touchAge, so that a call
// started on the lane ends (callTimeout) before mcp-go could think the
// session idle: touchAge = min(idleTTL/4, idleTTL - callTimeout - 10s); at
// or below zero, legacy calls never take the lane.
func newFastLane(idleTTL, callTimeout time.Duration) *fastLane {
	age := min(idleTTL/4, idleTTL-callTimeout-10*time.Second)
	if idleTTL <= 0 { // no idle expiry: nothing to keep fresh
		age = time.Duration(1<<63 - 1)
	}
	return &fastLane{inflight: map[string]context.CancelFunc{}, touchAge: age}
}

// setTools replaces the catalog the lane serves.
// Which tools bind Mcp-Param-* headers is worked out here, once: mcp-go
// re-encodes a tool's input schema to find them every time it is asked.
func (f *fastLane) setTools(m map[string]server.ServerTool) {
	mirrored := map[string]bool{}
	for name, t := range m {
		if len(mcp.ExtractParamHeaderBindings(&t.Tool)) > 0 {
			mirrored[name] = true
		}
	}
	f.mu.Lock()
	f.tools, f.mirrored = m, mirrored
	f.mu.Unlock()
}

// tool is the catalog entry the lane serves under name, if any, and
// whether its schema binds Mcp-Param-* headers.
func (f *fastLane) tool(name string) (t server.ServerTool, mirrored, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok = f.tools[name]
	return t, f.mirrored[name], ok
}

// touched notes that sid's request goes through mcp-go now.
func (f *fastLane) touched(sid string) {
	now := time.Now().UnixNano()
	if v, ok := f.lastSlow.Load(sid); ok {
		v.(*atomic.Int64).Store(now)
		return
	}
	v := new(atomic.Int64)
	v.Store(now)
	f.lastSlow.Store(sid, v)
}

func (f *fastLane) fresh(sid string) bool {
	v, ok := f.lastSlow.Load(sid)
	return ok && time.Since(time.Unix(0, v.(*atomic.Int64).Load())) < f.touchAge
}

func (f *fastLane) forget(sid string) { f.lastSlow.Delete(sid) }

// staleAll sends every session's next request through mcp-go, which
// delivers what it queued for the session (list_changed after a catalog
// change) with the response.
func (f *fastLane) staleAll() { f.lastSlow.Clear() }

// cancel cancels the lane's call with this session and request id, if any
// (notifications/cancelled; mcp-go does the same for its own calls).
func (f *fastLane) cancel(sid string, id json.RawMessage) {
	key, ok := inflightKey(sid, id)
	if !ok {
		return
	}
	f.mu.Lock()
	c := f.inflight[key]
	f.mu.Unlock()
	if c != nil {
		c()
	}
}

// inflightKey identifies a request within its session: JSON-RPC ids are
// strings or numbers, and "1" and 1 are different ids.
func inflightKey(sid string, id json.RawMessage) (string, bool) {
	id = bytes.TrimSpace(id)
	if len(id) == 0 {
		return "", false
	}
	switch id[0] {
	case '"':
		var s string
		if json.Unmarshal(id, &s) != nil {
			return "", false
		}
		return sid + "\x00s" + s, true
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var n json.Number
		if json.Unmarshal(id, &n) != nil {
			return "", false
		}
		return sid + "\x00n" + n.String(), true
	}
	return "", false
}

// idPreserved reports whether mcp-go would echo id byte for byte: a string,
// or an integer that a float64 holds exactly (mcp-go decodes numbers into
// float64: 1e999 fails, 123456789012345678901 comes back rounded).
func idPreserved(id json.RawMessage) bool {
	id = bytes.TrimSpace(id)
	if len(id) == 0 {
		return false
	}
	if id[0] == '"' {
		return true
	}
	digits := id
	if digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 15 || len(digits) > 1 && digits[0] == '0' {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// fastCall is one call on the lane, until mcp-go adopts it.
type fastCall struct {
	sid     string
	modern  bool          // a 2026-07-28 request: never handed over
	needOne sync.Once     // starts the hand-over
	adopted chan struct{} // closed when adopted (actx set) or when adoption failed (actx nil)
	adopOne sync.Once
	actx    context.Context
	result  chan *mcp.CallToolResult // the pipeline's result (buffered)
	cancel  context.CancelFunc       // cancels the pipeline
	// handover starts the hand-over to mcp-go (run once, by the first
	// relay that needs the session); over is closed when mcp-go's
	// ServeHTTP for it has returned.
	handover func()
	over     chan struct{}
	// raw is the downstream's result as JSON, for the result rawRes
	// stands for (forwardTool); set and read on the request's goroutine.
	raw    json.RawMessage
	rawRes *mcp.CallToolResult
}

// typed is res as mcp-go's handler must return it: the result itself
// rather than the stand-in for raw. The bytes were checked as mcp-go's
// client checks a result (tools.CallToolJSON), so they decode.
func (fc *fastCall) typed(res *mcp.CallToolResult, log *slog.Logger) *mcp.CallToolResult {
	if res == nil || res != fc.rawRes {
		return res
	}
	raw := fc.raw
	parsed, err := mcp.ParseCallToolResult(&raw)
	if err != nil {
		log.Error("downstream result not decodable for the hand-over", "err", err)
		return refusal(ReasonInternal, "")
	}
	return parsed
}

type fastKey struct{}
type adoptKey struct{}

// fastFrom is the lane's call behind ctx, if ctx is a lane call's context
// that mcp-go has not adopted.
func fastFrom(ctx context.Context) *fastCall {
	fc, _ := ctx.Value(fastKey{}).(*fastCall)
	return fc
}

var errNotAdopted = errors.New("the agent's session is not available for this request")

// sessionCtx returns a context with the agent's MCP session for a relay:
// ctx itself unless it is a lane call's, which is then handed to mcp-go
// first.
func sessionCtx(ctx context.Context) (context.Context, error) {
	fc := fastFrom(ctx)
	if fc == nil || fc.modern {
		return ctx, nil
	}
	fc.needOne.Do(fc.handover)
	select {
	case <-fc.adopted:
		if fc.actx == nil {
			return ctx, errNotAdopted
		}
		return fc.actx, nil
	case <-ctx.Done():
		return ctx, ctx.Err()
	}
}

// markAdopted records that mcp-go's tool handler took the call over, on
// its request context ctx.
func (fc *fastCall) markAdopted(ctx context.Context) {
	fc.adopOne.Do(func() {
		fc.actx = ctx
		close(fc.adopted)
	})
}

// adoptionRefused ends the relays' wait for a hand-over that did not
// happen (no-op once adopted): they fail from now on.
func (fc *fastCall) adoptionRefused() {
	fc.adopOne.Do(func() { close(fc.adopted) })
}

// adoptedCall, in a tool handler run by mcp-go, is the lane call this
// request hands over: the handler returns its result.
func adoptedCall(ctx context.Context) *fastCall {
	fc, _ := ctx.Value(adoptKey{}).(*fastCall)
	return fc
}

func (fc *fastCall) await(ctx context.Context) (*mcp.CallToolResult, error) {
	fc.markAdopted(ctx)
	select {
	case res := <-fc.result:
		return res, nil
	case <-ctx.Done():
		// Cancelled (notifications/cancelled, the stream closed): the
		// pipeline is cancelled too, and its answer (recorded as such) is
		// the answer, as for a call that came through mcp-go.
		fc.cancel()
		return <-fc.result, nil
	}
}

// fastRequest is the envelope the lane accepts.
type fastRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

var toolsCallMethod = []byte(`"tools/call"`)

// serveFast serves r on the lane if it can and reports whether it did.
// ctx is the guard's (identity and presented task); sid the checked
// session; body the whole request body.
func (b *Broker) serveFast(w http.ResponseWriter, r *http.Request, ctx context.Context, sid string, body []byte, next http.Handler) bool {
	f := b.fast
	if f == nil || r.Method != http.MethodPost || !bytes.Contains(body, toolsCallMethod) {
		return false
	}
	v := r.Header.Get(mcp.HeaderProtocolVersion)
	modern := mcp.IsModernProtocol(v)
	if !mcp.IsValidProtocolVersion(v) {
		return false
	}
	if modern {
		// 2026-07-28: no session; mcp-go ignores a session header and
		// refuses Last-Event-ID: both are its to answer.
		if sid != "" || r.Header.Get(mcp.HeaderLastEventID) != "" {
			return false
		}
	} else if sid == "" || !f.fresh(sid) {
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return false
	}
	var env fastRequest
	if json.Unmarshal(body, &env) != nil || env.JSONRPC != mcp.JSONRPC_VERSION || env.Method != string(mcp.MethodToolsCall) {
		return false
	}
	key, ok := inflightKey(sid, env.ID)
	if !ok || !idPreserved(env.ID) {
		return false
	}
	var params map[string]json.RawMessage
	if json.Unmarshal(env.Params, &params) != nil {
		return false
	}
	var req mcp.CallToolRequest
	req.Method = string(mcp.MethodToolsCall)
	for k, v := range params {
		switch k {
		case "name":
			if json.Unmarshal(v, &req.Params.Name) != nil {
				return false
			}
		case "arguments":
			if !bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
				req.Params.RawArguments = v
				req.Params.Arguments = v
			}
		case "_meta":
			if json.Unmarshal(v, &req.Params.Meta) != nil {
				return false
			}
			if m := req.Params.Meta; m != nil && (m.ProgressToken != nil || m.LogLevel() != "" || !modern && m.ProtocolVersion() != "") {
				// Progress and log messages stream to the agent; a
				// 2025-11-25 request declaring a version in _meta is
				// mcp-go's to judge.
				return false
			}
		default: // requestState, inputResponses, task, …: mcp-go's
			return false
		}
	}
	tool, mirrored, ok := f.tool(req.Params.Name)
	if !ok || tool.Tool.Execution != nil && tool.Tool.Execution.TaskSupport == mcp.TaskSupportRequired {
		return false // unknown here, or task-required (mcp-go refuses it without a task)
	}
	var info *server.RequestProtocolInfo
	if modern {
		// What mcp-go checks and puts in the context for a 2026-07-28
		// request; anything it would refuse, it refuses itself.
		m := req.Params.Meta
		if m == nil || m.ProtocolVersion() != v {
			return false
		}
		caps := m.ClientCapabilities() // decoded from _meta at each ask: once
		if caps == nil || mcp.ValidateStandardHeaders(r.Header.Get, v, mcp.MethodToolsCall, env.Params) != nil {
			return false
		}
		if mirrored && mcp.ValidateParamHeadersLookup(lookupHeader(r.Header), &tool.Tool, env.Params) != nil {
			return false
		}
		info = &server.RequestProtocolInfo{Modern: true, ProtocolVersion: v, ClientInfo: m.ClientInfo(),
			ClientCapabilities: caps, LogLevel: m.LogLevel()}
	}
	handler := tool.Handler

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fc := &fastCall{sid: sid, modern: modern, adopted: make(chan struct{}),
		result: make(chan *mcp.CallToolResult, 1), cancel: cancel}
	if modern {
		// Relays go back as input_required results (MRTR): the call never
		// needs a session, and closing the stream is how it is cancelled.
		cctx = server.WithRequestProtocolInfo(cctx, info)
	} else {
		f.mu.Lock()
		if f.inflight[key] != nil {
			f.mu.Unlock()
			return false // a duplicate id in flight: mcp-go's answer
		}
		f.inflight[key] = cancel
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			delete(f.inflight, key)
			f.mu.Unlock()
		}()
	}
	var hw *handoverWriter
	fc.handover = func() {
		// Hand over to mcp-go: its tool handler adopts fc (adoptKey) and
		// returns the pipeline's result; relays continue on its session.
		// This goroutine writes to w while the pipeline still runs on
		// the request's own goroutine, which waits for it (over) before
		// returning.
		f.touched(sid)
		f.handedOver.Add(1)
		fc.over = make(chan struct{})
		r2 := r.WithContext(context.WithValue(ctx, adoptKey{}, fc))
		r2.Body = io.NopCloser(bytes.NewReader(body))
		hw = &handoverWriter{w: w, fc: fc, h: http.Header{}}
		go func() {
			defer close(fc.over)
			defer fc.adoptionRefused() // no-op once adopted
			defer func() {
				// net/http recovers a handler's panic on the
				// connection's goroutine; this one is ours.
				if p := recover(); p != nil {
					b.log.Error("hand-over to mcp-go panicked", "tool", req.Params.Name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				}
			}()
			next.ServeHTTP(hw, r2)
		}()
	}

	f.served.Add(1)
	// The pipeline runs on this goroutine (no goroutine, and no stack to
	// grow, per call); a hand-over runs mcp-go beside it.
	res := b.runFast(context.WithValue(cctx, fastKey{}, fc), handler, req)
	fc.needOne.Do(func() {}) // no hand-over from here on
	if fc.over == nil {
		fc.adoptionRefused() // a late relay fails at once
	} else {
		fc.result <- fc.typed(res, b.log) // to mcp-go's handler (await), if it adopted the call
		<-fc.over
		if hw.passed() {
			return true // mcp-go wrote the response
		}
		// mcp-go refused the request before its tool handler (the
		// session ended meanwhile): what it wrote is discarded and the
		// lane answers with the call's result, which already ran.
		b.log.Warn("hand-over to the agent's session refused; answering on the fast lane", "session", sid, "status", hw.status)
		res = <-fc.result
	}
	if modern {
		b.decorateModern(res)
	} else if res != nil && res == fc.rawRes {
		writeFastJSON(w, env.ID, fc.raw)
		return true
	}
	writeFastResult(w, env.ID, res, b)
	return true
}

// runFast runs a lane call's pipeline; a panic becomes an internal refusal.
func (b *Broker) runFast(ctx context.Context, handler server.ToolHandlerFunc, req mcp.CallToolRequest) (res *mcp.CallToolResult) {
	defer func() {
		if p := recover(); p != nil {
			b.log.Error("tool call panicked", "tool", req.Params.Name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			res = refusal(ReasonInternal, "")
		}
	}()
	res, err := handler(ctx, req)
	if err != nil {
		res = mcp.NewToolResultError(err.Error())
	}
	return res
}

// handoverWriter is what mcp-go writes to for a handed-over request: held
// back until its tool handler adopts the call, then passed through.
type handoverWriter struct {
	w      http.ResponseWriter
	fc     *fastCall
	h      http.Header
	status int
	wrote  bool // headers passed through
}

// passed reports whether mcp-go's response goes to the agent: the call was
// adopted (and so its handler, not a refusal, produces the response).
func (hw *handoverWriter) passed() bool {
	select {
	case <-hw.fc.adopted:
		return hw.fc.actx != nil
	default:
		return false
	}
}

func (hw *handoverWriter) Header() http.Header { return hw.h }

func (hw *handoverWriter) WriteHeader(code int) {
	if hw.status == 0 {
		hw.status = code
	}
	if !hw.passed() || hw.wrote {
		return
	}
	hw.wrote = true
	for k, v := range hw.h {
		hw.w.Header()[k] = v
	}
	hw.w.WriteHeader(code)
}

func (hw *handoverWriter) Write(p []byte) (int, error) {
	if !hw.passed() {
		return len(p), nil
	}
	if !hw.wrote {
		hw.WriteHeader(http.StatusOK)
	}
	return hw.w.Write(p)
}

func (hw *handoverWriter) Flush() {
	if hw.passed() && hw.wrote {
		if f, ok := hw.w.(http.Flusher); ok {
			f.Flush()
		}
	}
}

func writeFastResult(w http.ResponseWriter, id json.RawMessage, res *mcp.CallToolResult, b *Broker) {
	out, err := json.Marshal(res)
	if err != nil {
		b.log.Error("tool result not encodable", "err", err)
		out, _ = json.Marshal(refusal(ReasonInternal, ""))
	}
	writeFastJSON(w, id, out)
}

// writeFastJSON answers with a result object already encoded.
func writeFastJSON(w http.ResponseWriter, id json.RawMessage, out []byte) {
	buf := make([]byte, 0, len(out)+len(id)+40)
	buf = append(buf, `{"jsonrpc":"2.0","id":`...)
	buf = append(buf, id...)
	buf = append(buf, `,"result":`...)
	buf = append(buf, out...)
	buf = append(buf, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf)
}

// decorateModern stamps a 2026-07-28 result as mcp-go's decorateResponse
// does: resultType complete unless set (input_required), and the server's
// identity in _meta unless present.
func (b *Broker) decorateModern(res *mcp.CallToolResult) {
	if res.GetResultType() == "" {
		res.SetResultType(mcp.ResultTypeComplete)
	}
	if m := res.EnsureResultMeta(); m != nil && m.ServerInfo() == nil {
		m.SetServerInfo(mcp.Implementation{Name: serverName, Version: b.version})
	}
}

// lookupHeader is mcp-go's: the first value of a header and whether it
// was sent at all.
func lookupHeader(h http.Header) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v := h.Values(name)
		if len(v) == 0 {
			return "", false
		}
		return v[0], true
	}
}
