package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/mark3labs/mcp-go/mcp"
)

// DefaultMaxAnswerBytes bounds a downstream's answer to one request unless
// Options.MaxAnswerBytes says otherwise.
const DefaultMaxAnswerBytes = 32 << 20

// limitAnswers returns hc with what downstreams send capped at max bytes:
// the body of every answer to a POST (one request's answer: its JSON, or
// the SSE stream it comes on) as a whole, each event of an SSE stream
// opened by a GET (a session's standing stream, the legacy SSE transport's
// stream that carries every answer, a resumed answer), and any other GET's
// body as a whole. Past the limit, reading fails with ErrAnswerTooLarge.
// Both mcp-go's client and the raw path read through it, so a downstream
// cannot make the broker buffer an unbounded answer.
func limitAnswers(hc *http.Client, max int64) *http.Client {
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	out := *hc
	out.Transport = limitedTransport{next: next, max: max}
	return &out
}

type limitedTransport struct {
	next http.RoundTripper
	max  int64
}

func (l limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	trip := tripFrom(r.Context())
	// What the request asked for decides how it is read (mcp-go reads a
	// GET it opened for events as events, whatever the Content-Type).
	if r.Method == http.MethodGet && strings.Contains(strings.ToLower(r.Header.Get("Accept")), "text/event-stream") {
		resp.Body = &eventLimitedBody{ReadCloser: resp.Body, max: l.max, trip: trip}
	} else {
		resp.Body = &limitedBody{ReadCloser: resp.Body, left: l.max, max: l.max, trip: trip}
	}
	return resp, nil
}

type limitedBody struct {
	io.ReadCloser
	left, max int64
	trip      *answerTrip
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.left <= 0 {
		// At the limit: the answer may end exactly here.
		var one [1]byte
		if n, err := b.ReadCloser.Read(one[:]); n == 0 && err != nil {
			return 0, err
		}
		err := &tooLargeError{what: "an answer", max: b.max}
		b.trip.set(err)
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// eventLimitedBody caps each event of an SSE stream at max bytes, counted
// as mcp-go's readers see events: lines end at LF only, and a line holding
// nothing but CRs is the blank line that ends an event. The bytes before
// the one that passes the limit are still delivered (whole events among
// them are answers to other requests); the next read fails.
type eventLimitedBody struct {
	io.ReadCloser
	max     int64
	n       int64 // bytes of the current event so far (LFs not counted)
	data    bool  // the current line has a byte other than CR
	head    idPrefix
	trip    *answerTrip
	pending error // returned by the next Read
}

func (b *eventLimitedBody) Read(p []byte) (int, error) {
	if b.pending != nil {
		return 0, b.pending
	}
	n, err := b.ReadCloser.Read(p)
	for i, c := range p[:n] {
		if c == '\n' {
			if !b.data {
				b.n = 0 // a blank line ends the event
				b.head.reset()
			}
			b.data = false
			continue
		}
		if c != '\r' {
			b.data = true
		}
		b.head.add(c)
		if b.n++; b.n > b.max {
			b.pending = newTooLarge("an event on the server's stream", b.max, b.head.bytes())
			b.trip.set(b.pending)
			if i == 0 {
				return 0, b.pending
			}
			return i, nil
		}
	}
	return n, err
}

// tooLargeError is ErrAnswerTooLarge, with the JSON-RPC id of the answer
// that passed the limit when its first bytes name it.
type tooLargeError struct {
	what   string
	max    int64
	id     []byte // the raw id token, or nil
	answer bool   // the message is an answer ("result" or "error", no "method")
}

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("%v: %s passed %d bytes", ErrAnswerTooLarge, e.what, e.max)
}

func (e *tooLargeError) Is(target error) bool { return target == ErrAnswerTooLarge }

// concerns reports whether the message that passed the limit may be the
// answer to the request with this id: true when it is an answer with this
// id, or an answer whose id was not seen; false for anything else.
func (e *tooLargeError) concerns(id mcp.RequestId) bool {
	if !e.answer {
		return false // not an answer (or not seen to be one): the calls merely lost their connection
	}
	if e.id == nil {
		return true
	}
	var got mcp.RequestId
	if err := json.Unmarshal(e.id, &got); err != nil {
		return true
	}
	return got.String() == id.String() // as mcp-go matches answers to requests
}

// newTooLarge is the limit error for a message whose first bytes are head.
func newTooLarge(what string, max int64, head []byte) *tooLargeError {
	id, answer := topLevel(head)
	return &tooLargeError{what: what, max: max, id: id, answer: answer}
}

// answerTrip holds, for one request, the limit error its answer's stream
// met: mcp-go does not always pass a read error on (a resumed answer's
// stream), so the tap asks here.
type answerTrip struct {
	mu  sync.Mutex
	err error
}

type tripKey struct{}

func withTrip(ctx context.Context) (context.Context, *answerTrip) {
	t := &answerTrip{}
	return context.WithValue(ctx, tripKey{}, t), t
}

func tripFrom(ctx context.Context) *answerTrip {
	t, _ := ctx.Value(tripKey{}).(*answerTrip)
	return t
}

func (t *answerTrip) set(err error) {
	if t == nil {
		return
	}
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.mu.Unlock()
}

func (t *answerTrip) get() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// idPrefix keeps the first bytes of a message, to name the request an
// oversized answer belongs to.
type idPrefix struct {
	b [512]byte
	n int
}

func (p *idPrefix) add(c byte) {
	if p.n < len(p.b) {
		p.b[p.n] = c
		p.n++
	}
}

func (p *idPrefix) addAll(b []byte) { p.n += copy(p.b[p.n:], b) }

func (p *idPrefix) reset() { p.n = 0 }

func (p *idPrefix) bytes() []byte { return p.b[:p.n] }

// topLevel reads the top-level members of the JSON object that starts at
// the first '{' in b, as far as b goes. answer is whether b shows the
// message is an answer: a "result" or "error" member, and no "method" (a
// request or notification; some encoders put "method" after a long
// "params", so a message that shows neither is not taken for an answer).
// id is the raw value of an answer's "id" (a number or a string seen
// whole; the last one, as encoding/json keeps), or nil.
func topLevel(b []byte) (id []byte, answer bool) {
	var request bool
	defer func() {
		answer = answer && !request
		if !answer {
			id = nil
		}
	}()
	i := bytes.IndexByte(b, '{')
	if i < 0 {
		return nil, false
	}
	depth := 0
	for i < len(b) {
		switch c := b[i]; c {
		case '{', '[':
			depth++
			i++
		case '}', ']':
			depth--
			if depth <= 0 {
				return id, answer
			}
			i++
		case '"':
			end := stringEnd(b, i)
			if end < 0 {
				return id, answer
			}
			key := string(b[i:end])
			i = end
			if depth != 1 || (key != `"id"` && key != `"method"` && key != `"result"` && key != `"error"`) {
				continue
			}
			j := skipSpace(b, i)
			if j >= len(b) || b[j] != ':' {
				continue // a value, not a key
			}
			switch key {
			case `"method"`:
				request = true
				continue
			case `"result"`, `"error"`:
				answer = true
				continue
			}
			j = skipSpace(b, j+1)
			if j >= len(b) {
				return id, answer
			}
			if b[j] == '"' {
				if e := stringEnd(b, j); e > 0 {
					id, i = bytes.Clone(b[j:e]), e
				}
				continue
			}
			e := j
			for e < len(b) && strings.IndexByte("-+.0123456789eE", b[e]) >= 0 {
				e++
			}
			if e > j && e < len(b) { // a number, and not cut short
				id = bytes.Clone(b[j:e])
			}
			i = e
		default:
			i++
		}
	}
	return id, answer
}

// stringEnd returns the index just past the JSON string that starts at
// b[i] (a quote), or -1 if b ends first.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}
