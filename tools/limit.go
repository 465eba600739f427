package tools

import (
	"fmt"
	"io"
	"net/http"
)

// DefaultMaxAnswerBytes bounds a downstream's answer to one request unless
// Options.MaxAnswerBytes says otherwise.
const DefaultMaxAnswerBytes = 32 << 20

// limitAnswers returns hc with the body of every answer to a POST (one
// request's answer: its JSON, or the SSE stream it comes on) capped at max
// bytes; past them, reading fails with ErrAnswerTooLarge. GETs (a
// session's standing stream, a resumed answer's stream) are not capped as
// a whole. Both mcp-go's client and the raw path read through it, so a
// downstream cannot make the broker buffer an unbounded answer.
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
	if err != nil || r.Method != http.MethodPost {
		return resp, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: l.max, max: l.max}
	return resp, nil
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
