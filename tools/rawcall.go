package tools

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// RawResult is a tools/call result as JSON, ready to go to the agent.
type RawResult struct {
	JSON    json.RawMessage // the result object
	IsError bool
}

// CallToolJSON is CallTool for a caller that relays the result as JSON
// (the broker's fast lane). On a 2025-11-25 streamable HTTP connection the
// request is written and the result read here, as bytes: mcp-go's client
// builds each request twice, decodes each result in several passes and
// starts a goroutine per request (the downstream hop measured about 85 µs
// of CPU per call through it, 46 this way; README, Benchmarks). What
// mcp-go's transport does besides is done the same way: the
// session and protocol headers, the server's requests and notifications on
// an SSE answer (through the client's own handlers), resuming a stream the
// server ended before the answer. Other connections go through CallTool.
func (p *Pool) CallToolJSON(ctx context.Context, t *Tool, args []byte, meta *mcp.Meta) (RawResult, error) {
	return forward(ctx, p, t.Server, meta, func(c *client.Client, m *mcp.Meta) (RawResult, error) {
		if th, ok := c.GetTransport().(*tapHTTP); ok && th.rawOK() {
			return th.callTool(ctx, t.Name, args, m)
		}
		res, err := callTool(ctx, c, t, args, m)
		if err != nil {
			return RawResult{}, err
		}
		return typedJSON(res)
	})
}

// typedJSON encodes a result CallTool returned (cleaned).
func typedJSON(res *mcp.CallToolResult) (RawResult, error) {
	b, err := json.Marshal(res)
	if err != nil {
		return RawResult{}, fmt.Errorf("encode result: %w", err)
	}
	return RawResult{JSON: b, IsError: res.IsError}, nil
}

// rawConn is what a raw call needs of a streamable HTTP connection besides
// mcp-go's transport: set by newTapHTTP, and by the client through the
// setters below.
type rawConn struct {
	url        string
	hc         *http.Client
	headers    map[string]string
	headerFunc func(context.Context) map[string]string
	max        int64           // a resumed answer's cap (the POST's is the client's)
	life       context.Context // ends when the client is closed
	ids        atomic.Uint64
	version    atomic.Value // string: the negotiated protocol version
	session    atomic.Value // string: the session id initialize left
	ended      atomic.Bool  // a raw request was answered 404
	requests   atomic.Pointer[transport.RequestHandler]
	notify     atomic.Pointer[func(mcp.JSONRPCNotification)]
}

// rawOK reports whether calls may bypass mcp-go's client: a 2025-11-25 (or
// older) session, with the client's request handler in place. A
// 2026-07-28 connection carries per-request _meta, mirrored headers and
// input_required rounds that stay mcp-go's.
func (t *tapHTTP) rawOK() bool {
	v, _ := t.raw.version.Load().(string)
	return v != "" && !mcp.IsModernProtocol(v) && t.raw.requests.Load() != nil && t.raw.life.Err() == nil
}

func (t *tapHTTP) callTool(ctx context.Context, name string, args []byte, meta *mcp.Meta) (RawResult, error) {
	// mcp-go's ids are numbers counted by its client: a string of our own
	// never collides with one in flight.
	id := strconv.AppendUint([]byte(`"mcpbroker-`), t.raw.ids.Add(1), 10)
	id = append(id, '"')
	nameJSON, _ := json.Marshal(name) // a string always encodes
	body := make([]byte, 0, 80+len(id)+len(nameJSON)+len(args))
	body = append(body, `{"jsonrpc":"2.0","id":`...)
	body = append(body, id...)
	body = append(body, `,"method":"tools/call","params":{"name":`...)
	body = append(body, nameJSON...)
	if len(args) > 0 {
		body = append(body, `,"arguments":`...)
		body = append(body, args...)
	}
	if meta != nil {
		mb, err := json.Marshal(meta)
		if err != nil {
			return RawResult{}, fmt.Errorf("encode _meta: %w", err)
		}
		body = append(body, `,"_meta":`...)
		body = append(body, mb...)
	}
	body = append(body, "}}"...)

	resp, err := t.rawResponse(ctx, body, id)
	if err != nil {
		return RawResult{}, transport.NewError(err)
	}
	if resp.Error != nil {
		return RawResult{}, resp.Error.AsError()
	}
	return resultJSON(resp.Result)
}

// resultJSON decodes a result as mcp-go's client does (its checks and its
// reading of isError are the broker's) and keeps the bytes as they are when
// they say the same to a client that reads keys exactly. Otherwise (a key
// that only case-folds to one of the result's, which encoding/json reads as
// that key and an exact reader does not; the downstream hop's resultType or
// protocol _meta, which CallTool removes) the result goes to the agent
// re-encoded from mcp-go's types, as CallTool's results do.
func resultJSON(raw json.RawMessage) (RawResult, error) {
	if isError, ok := plainText(raw); ok {
		return RawResult{JSON: bytes.TrimSpace(raw), IsError: isError}, nil
	}
	res, err := mcp.ParseCallToolResult(&raw)
	if err != nil {
		return RawResult{}, err
	}
	if res.NeedsInput() {
		// Input rounds (MRTR) belong to 2026-07-28; mcp-go's client
		// would re-send the call for them.
		return RawResult{}, errors.New("the downstream asked for more input (input_required), which a 2025-11-25 connection does not carry")
	}
	if res.ResultType == "" && !hasProtocolMeta(res.Meta) && exactKeys(raw) {
		return RawResult{JSON: bytes.TrimSpace(raw), IsError: res.IsError}, nil
	}
	cleanResult(&res.Result)
	return typedJSON(res)
}

// plainText recognizes, without decoding, the most common result: text
// content only, each item exactly {"type":"text","text":string}, with an
// optional isError literal and any structuredContent, every key spelled
// exactly, once. mcp-go's decoder accepts every such result and reads
// isError from it as an exact-key reader does (FuzzPlainText holds the two
// to that), so it needs no decoding; anything else is decoded. raw is
// valid JSON.
func plainText(raw []byte) (isError, ok bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false, false
	}
	var seen [3]bool // content, isError, structuredContent
	for first := true; ; first = false {
		i = skipSpace(raw, i+1)
		if first && i < len(raw) && raw[i] == '}' {
			return false, false // no content
		}
		key, next, ok := plainKey(raw, i)
		if !ok {
			return false, false
		}
		i = skipSpace(raw, next)
		if i >= len(raw) || raw[i] != ':' {
			return false, false
		}
		i = skipSpace(raw, i+1)
		switch key {
		case "content":
			if seen[0] {
				return false, false
			}
			seen[0] = true
			if i, ok = textItems(raw, i); !ok {
				return false, false
			}
		case "isError":
			if seen[1] {
				return false, false
			}
			seen[1] = true
			switch {
			case bytes.HasPrefix(raw[i:], []byte("true")):
				isError, i = true, i+4
			case bytes.HasPrefix(raw[i:], []byte("false")):
				i += 5
			default:
				return false, false
			}
		case "structuredContent":
			if seen[2] {
				return false, false
			}
			seen[2] = true
			i = skipValue(raw, i)
		default:
			return false, false
		}
		i = skipSpace(raw, i)
		if i >= len(raw) {
			return false, false
		}
		switch raw[i] {
		case ',':
			continue
		case '}':
			return isError, seen[0] && skipSpace(raw, i+1) == len(raw)
		default:
			return false, false
		}
	}
}

// textItems reads a content array of {"type":"text","text":string} items
// at i and returns the index after it.
func textItems(raw []byte, i int) (int, bool) {
	if i >= len(raw) || raw[i] != '[' {
		return 0, false
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == ']' {
		return i + 1, true
	}
	for {
		if i >= len(raw) || raw[i] != '{' {
			return 0, false
		}
		var typ, text bool
		for {
			key, next, ok := plainKey(raw, skipSpace(raw, i+1))
			if !ok {
				return 0, false
			}
			i = skipSpace(raw, next)
			if i >= len(raw) || raw[i] != ':' {
				return 0, false
			}
			i = skipSpace(raw, i+1)
			switch {
			case key == "type" && !typ && bytes.HasPrefix(raw[i:], []byte(`"text"`)):
				typ, i = true, i+len(`"text"`)
			case key == "text" && !text && i < len(raw) && raw[i] == '"':
				text, i = true, skipValue(raw, i)
			default:
				return 0, false
			}
			i = skipSpace(raw, i)
			if i < len(raw) && raw[i] == ',' {
				continue
			}
			if i >= len(raw) || raw[i] != '}' || !typ || !text {
				return 0, false
			}
			break
		}
		i = skipSpace(raw, i+1)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
			continue
		}
		if i < len(raw) && raw[i] == ']' {
			return i + 1, true
		}
		return 0, false
	}
}

// plainKey reads an object key at i written without escapes and returns it
// (as a string that does not escape to the heap when only compared) and the
// index after its closing quote.
func plainKey(raw []byte, i int) (string, int, bool) {
	if i >= len(raw) || raw[i] != '"' {
		return "", 0, false
	}
	end := bytes.IndexByte(raw[i+1:], '"')
	if end < 0 || bytes.IndexByte(raw[i+1:i+1+end], '\\') >= 0 {
		return "", 0, false
	}
	return string(raw[i+1 : i+1+end]), i + end + 2, true
}

// skipValue returns the index after the JSON value at i (raw is valid).
func skipValue(raw []byte, i int) int {
	depth := 0
	for ; i < len(raw); i++ {
		switch raw[i] {
		case '"':
			for i++; i < len(raw) && raw[i] != '"'; i++ {
				if raw[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
			if depth < 0 {
				return i
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

// resultKeys are the members of a tools/call result mcp-go reads.
var resultKeys = []string{"content", "structuredContent", "isError", "_meta", "resultType", "inputRequests", "requestState"}

// exactKeys reports whether no top-level key of the result object differs
// from one of resultKeys by case alone (nor is written with escapes, which
// would have to be decoded to tell). raw is valid JSON (the response
// decoded), so a scanner that only tracks strings and nesting finds the
// keys without allocating.
func exactKeys(raw []byte) bool {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false
	}
	depth, expectKey := 0, false
	for ; i < len(raw); i++ {
		switch c := raw[i]; c {
		case '{':
			depth++
			expectKey = depth == 1
		case '[':
			depth++
		case '}', ']':
			depth--
		case ',':
			expectKey = depth == 1
		case '"':
			end := i + 1
			for end < len(raw) && raw[end] != '"' {
				if raw[end] == '\\' {
					if expectKey {
						return false
					}
					end++
				}
				end++
			}
			if expectKey {
				key := string(raw[i+1 : end]) // does not escape: compared only
				for _, want := range resultKeys {
					if key != want && strings.EqualFold(key, want) {
						return false
					}
				}
				expectKey = false
			}
			i = end
		}
	}
	return true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func hasProtocolMeta(m *mcp.Meta) bool {
	if m == nil {
		return false
	}
	for k := range m.AdditionalFields {
		if strings.HasPrefix(k, "io.modelcontextprotocol/") {
			return true
		}
	}
	return false
}

// rawResponse posts one request and reads its response: a JSON body, or
// the SSE stream mcp-go's server upgrades to when a tool sends something
// first. The request ends with ctx, or when the client is closed (as
// mcp-go's transport does).
func (t *tapHTTP) rawResponse(ctx context.Context, body, id []byte) (*transport.JSONRPCResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(t.raw.life, cancel)
	defer stop()
	resp, err := t.send(ctx, http.MethodPost, bytes.NewReader(body), "application/json, text/event-stream", nil)
	if err != nil {
		return nil, fmt.Errorf("failed to send request: %w", err)
	}
	// Cancel before closing: on HTTP/2 Close can otherwise block (mcp-go
	// does the same).
	defer func() { cancel(); resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		if resp.StatusCode == http.StatusUnauthorized {
			return nil, &transport.AuthorizationRequiredError{}
		}
		// As mcp-go: a body that decodes is the response (with an error,
		// or failing as a result); anything else fails the request.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var er transport.JSONRPCResponse
		if json.Unmarshal(b, &er) == nil {
			return &er, nil
		}
		return nil, fmt.Errorf("request failed with status %d: %s", resp.StatusCode, truncateBody(b))
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch mt {
	case "application/json":
		b, err := readBody(resp)
		if err != nil {
			return nil, fmt.Errorf("failed to read response: %w", err)
		}
		var r transport.JSONRPCResponse
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("failed to decode response: %w", err)
		}
		if r.ID.IsNil() {
			return nil, errors.New("response should contain RPC id")
		}
		return &r, nil
	case "text/event-stream":
		return t.readEvents(ctx, resp.Body, id)
	default:
		return nil, fmt.Errorf("unexpected content type: %s", resp.Header.Get("Content-Type"))
	}
}

// readBody reads a whole body, in one allocation when its length is known
// and small (a length the server merely claims is not allocated up front).
func readBody(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n > 0 && n <= 1<<20 {
		b := make([]byte, n)
		_, err := io.ReadFull(resp.Body, b)
		return b, err
	}
	return io.ReadAll(resp.Body)
}

func truncateBody(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// errSessionEnded refuses a raw request once the session has ended: mcp-go
// sends nothing more on it either, and the supervisor reconnects.
var errSessionEnded = fmt.Errorf("%w (the session ended)", transport.ErrSessionTerminated)

// send is mcp-go's sendHTTP: the session's headers, and a 404 ends the
// session.
func (t *tapHTTP) send(ctx context.Context, method string, body io.Reader, accept string, h http.Header) (*http.Response, error) {
	sid, _ := t.raw.session.Load().(string)
	if t.raw.ended.Load() || t.inner.GetSessionId() != sid {
		// mcp-go's transport ended the session (its own 404), or we did.
		return nil, errSessionEnded
	}
	req, err := http.NewRequestWithContext(ctx, method, t.raw.url, body)
	if err != nil {
		return nil, err
	}
	if h != nil {
		req.Header = h
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	if sid != "" {
		req.Header.Set(transport.HeaderKeySessionID, sid)
	}
	if v, _ := t.raw.version.Load().(string); v != "" {
		req.Header.Set(transport.HeaderKeyProtocolVersion, v)
	}
	for k, v := range t.raw.headers {
		req.Header.Set(k, v)
	}
	if t.raw.headerFunc != nil {
		for k, v := range t.raw.headerFunc(ctx) {
			req.Header.Set(k, v)
		}
	}
	resp, err := t.raw.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		resp.Body.Close()
		// A GET's 404 may only mean no stream; without a session there is
		// none to end (mcp-go's transport does the same).
		if method != http.MethodGet && sid != "" {
			t.raw.ended.Store(true)
			t.lostOnce.Do(func() { close(t.lost) })
		}
		return nil, transport.ErrSessionTerminated
	}
	return resp, nil
}

// readEvents reads an SSE answer until the response with id: the server's
// notifications and requests on the way go to the client's handlers, as
// mcp-go's transport sends them. A stream the server ends before the
// response, once it has sent an event id, is resumed with Last-Event-ID
// after the delay it asked for (2025-11-25), as often as it ends so.
func (t *tapHTTP) readEvents(ctx context.Context, body io.Reader, id []byte) (*transport.JSONRPCResponse, error) {
	var cur sseCursor
	resp, ended, err := t.readStream(ctx, body, id, &cur)
	for resp == nil && err == nil {
		if !ended || cur.lastID == "" {
			return nil, errors.New("the SSE stream ended before the response")
		}
		resp, ended, err = t.resume(ctx, id, &cur)
	}
	return resp, err
}

// resume waits the reconnection delay, reopens the stream with a GET
// carrying Last-Event-ID, and reads it.
func (t *tapHTTP) resume(ctx context.Context, id []byte, cur *sseCursor) (*transport.JSONRPCResponse, bool, error) {
	delay := time.Second
	if cur.hasRetry {
		delay = max(cur.retry, 10*time.Millisecond)
	}
	timer := time.NewTimer(delay)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
		return nil, false, ctx.Err()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := http.Header{}
	h.Set("Last-Event-ID", cur.lastID)
	r, err := t.send(ctx, http.MethodGet, nil, "text/event-stream", h)
	if err != nil {
		return nil, false, fmt.Errorf("failed to resume the SSE stream for the response: %w", err)
	}
	defer func() { cancel(); r.Body.Close() }()
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); r.StatusCode != http.StatusOK || mt != "text/event-stream" {
		return nil, false, fmt.Errorf("failed to resume the SSE stream for the response: status %d, %q", r.StatusCode, r.Header.Get("Content-Type"))
	}
	// A resumed answer is still the request's answer: capped as the POST's.
	return t.readStream(ctx, &limitedBody{ReadCloser: r.Body, left: t.raw.max, max: t.raw.max}, id, cur)
}

type sseCursor struct {
	lastID   string
	retry    time.Duration
	hasRetry bool
}

// readStream reads events from one stream. ended reports a stream the
// server closed (not one that broke off).
func (t *tapHTTP) readStream(ctx context.Context, body io.Reader, id []byte, cur *sseCursor) (resp *transport.JSONRPCResponse, ended bool, err error) {
	br := bufio.NewReader(body)
	var data strings.Builder
	var evID string
	hasID := false
	for {
		line, rerr := br.ReadString('\n')
		if rerr != nil {
			if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			if rerr == io.EOF {
				// An event the stream ended in is dispatched; its id is not
				// recorded (it never finished).
				if data.Len() > 0 {
					if r := t.dispatch(ctx, data.String(), id); r != nil {
						return r, false, nil
					}
				}
				return nil, true, nil
			}
			return nil, false, fmt.Errorf("SSE stream: %w", rerr)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if hasID {
				cur.lastID, hasID = evID, false
			}
			if data.Len() > 0 {
				r := t.dispatch(ctx, data.String(), id)
				data.Reset()
				if r != nil {
					return r, false, nil
				}
			}
			continue
		}
		if v, ok := strings.CutPrefix(line, "data:"); ok {
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(v, " "))
		} else if v, ok := strings.CutPrefix(line, "id:"); ok {
			if v = strings.TrimPrefix(v, " "); !strings.ContainsRune(v, 0) {
				evID, hasID = v, true
			}
		} else if v, ok := strings.CutPrefix(line, "retry:"); ok {
			v = strings.TrimPrefix(v, " ")
			if ms, err := strconv.ParseUint(v, 10, 31); err == nil && v != "" && strings.Trim(v, "0123456789") == "" {
				cur.retry, cur.hasRetry = time.Duration(ms)*time.Millisecond, true
			}
		}
	}
}

// dispatch handles one message of an SSE answer and returns it if it is
// the response to id. Like mcp-go's stream reader it survives a panic in a
// handler (logged; the stream is read on).
func (t *tapHTTP) dispatch(ctx context.Context, data string, id []byte) (resp *transport.JSONRPCResponse) {
	defer func() {
		if p := recover(); p != nil {
			t.log.Error("panic handling a message from the downstream", "panic", fmt.Sprint(p))
			resp = nil
		}
	}()
	var head struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if err := json.Unmarshal([]byte(data), &head); err != nil {
		t.log.Info("SSE message from the downstream not understood (ignored)", "err", err, "message_len", len(data))
		return nil
	}
	hasID := len(head.ID) > 0 && !bytes.Equal(head.ID, []byte("null"))
	switch {
	case !hasID:
		var n mcp.JSONRPCNotification
		if err := json.Unmarshal([]byte(data), &n); err != nil {
			t.log.Info("notification from the downstream not understood (ignored)", "err", err)
			return nil
		}
		if h := t.raw.notify.Load(); h != nil {
			(*h)(n)
		}
	case head.Method != "":
		var r transport.JSONRPCRequest
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			t.log.Info("request from the downstream not understood (ignored)", "err", err)
			return nil
		}
		t.serveRequest(ctx, r)
	default:
		// Unlike mcp-go, which takes the first response on the stream,
		// only the answer to this request is.
		if !bytes.Equal(bytes.TrimSpace(head.ID), id) {
			t.log.Info("response for another request on a tools/call stream (ignored)", "id", string(head.ID))
			return nil
		}
		var r transport.JSONRPCResponse
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			t.log.Info("response from the downstream not understood (ignored)", "err", err)
			return nil
		}
		return &r
	}
	return nil
}

// serveRequest answers a request the server sent on the call's stream with
// the client's handler (elicitation, sampling, roots, ping), in its own
// goroutine so that the stream is read on, as mcp-go's transport does.
func (t *tapHTTP) serveRequest(ctx context.Context, r transport.JSONRPCRequest) {
	h := t.raw.requests.Load()
	go func() {
		var res *transport.JSONRPCResponse
		defer func() {
			if p := recover(); p != nil {
				t.log.Error("panic handling a request from the downstream", "method", r.Method, "panic", fmt.Sprint(p))
				res = transport.NewJSONRPCErrorResponse(r.ID, mcp.INTERNAL_ERROR, fmt.Sprintf("internal error: panic in request handler: %v", p), nil)
			}
			if res != nil {
				t.respond(ctx, res)
			}
		}()
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var err error
		res, err = (*h)(rctx, r)
		if err != nil {
			t.log.Warn("request from the downstream failed", "method", r.Method, "err", err)
			code, msg := mcp.INTERNAL_ERROR, err.Error()
			switch {
			case errors.Is(err, context.Canceled):
				code, msg = mcp.REQUEST_INTERRUPTED, "request was cancelled"
			case errors.Is(err, context.DeadlineExceeded):
				code, msg = mcp.REQUEST_INTERRUPTED, "request timed out"
			case r.Method == string(mcp.MethodSamplingCreateMessage):
				msg = "sampling request failed: " + msg
			}
			res = transport.NewJSONRPCErrorResponse(r.ID, code, msg, nil)
		}
	}()
}

// respond posts a response to the server's request.
func (t *tapHTTP) respond(ctx context.Context, res *transport.JSONRPCResponse) {
	b, err := json.Marshal(res)
	if err != nil {
		t.log.Error("response to the downstream not encodable", "err", err)
		return
	}
	// The answer goes out even if the call ended meanwhile (the server
	// waits for it), within a bound.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	resp, err := t.send(ctx, http.MethodPost, bytes.NewReader(b), "application/json, text/event-stream", nil)
	if err != nil {
		t.log.Warn("response to the downstream not sent", "err", err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		t.log.Warn("downstream rejected a response", "status", resp.StatusCode)
	}
}

// The client installs its handlers on the transport; the raw path uses the
// same ones.

func (t *tapHTTP) SetRequestHandler(h transport.RequestHandler) {
	t.raw.requests.Store(&h)
	t.inner.SetRequestHandler(h)
}

func (t *tapHTTP) SetNotificationHandler(h func(mcp.JSONRPCNotification)) {
	t.raw.notify.Store(&h)
	t.inner.SetNotificationHandler(h)
}

// SetProtocolVersion is called once initialize has succeeded (and so with
// the session id it left in place).
func (t *tapHTTP) SetProtocolVersion(v string) {
	t.raw.session.Store(t.inner.GetSessionId())
	t.raw.version.Store(v)
	t.inner.SetProtocolVersion(v)
}

func (t *tapHTTP) Close() error {
	t.stop()
	return t.inner.Close()
}
