package tools

import (
	"fmt"
	"io"
	"net/http"
	"strings"
)

// DefaultMaxAnswerBytes bounds a downstream's answer to one request unless
// Options.MaxAnswerBytes says otherwise.
const DefaultMaxAnswerBytes = 32 << 20

// limitAnswers returns hc with the body of every answer to a POST (one
// request's answer: its JSON, or the SSE stream it comes on) capped at max
// bytes; past them, reading fails with ErrAnswerTooLarge. GETs (a
// session's standing stream, a resumed answer's stream) are not capped as
// a whole, but each of their events is. Both mcp-go's client and the raw
// path read through it, so a downstream cannot make the broker buffer an
// unbounded answer.
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
	switch {
	case r.Method == http.MethodPost:
		resp.Body = &limitedBody{ReadCloser: resp.Body, left: l.max, max: l.max}
	case r.Method == http.MethodGet && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"):
		resp.Body = &eventLimitedBody{ReadCloser: resp.Body, max: l.max, lineStart: true}
	}
	return resp, nil
}

// eventLimitedBody caps each event of a standing SSE stream (a GET: the
// SSE transport's answers all come on it) at max bytes, its line endings
// not counted; past them, reading fails with ErrAnswerTooLarge.
type eventLimitedBody struct {
	io.ReadCloser
	max       int64
	n         int64 // bytes of the current event so far
	lineStart bool  // nothing yet on the current line
	prevCR    bool  // the last byte was a CR (a CRLF's LF is not a blank line)
	err       error
}

func (b *eventLimitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.ReadCloser.Read(p)
	for _, c := range p[:n] {
		switch {
		case c == '\n' && b.prevCR:
			b.prevCR = false
		case c == '\r' || c == '\n':
			b.prevCR = c == '\r'
			if b.lineStart {
				b.n = 0 // a blank line ends the event
			}
			b.lineStart = true
		default:
			b.prevCR, b.lineStart = false, false
			if b.n++; b.n > b.max {
				b.err = fmt.Errorf("%w: an event on the server's stream passed %d bytes", ErrAnswerTooLarge, b.max)
				return 0, b.err
			}
		}
	}
	return n, err
}

type limitedBody struct {
	io.ReadCloser
	left, max int64
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
		return 0, fmt.Errorf("%w (%d bytes)", ErrAnswerTooLarge, b.max)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
