package audit

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
)

// appendCanonicalEvent appends the canonical JSON of ev to dst: the same
// bytes as canonicalize(json.Marshal(ev)) (TestCanonicalFastMatchesGeneric
// checks it on random events, the golden test pins it), without the encode,
// decode and re-encode round trip. The keys are written in canonical
// (byte-sorted) order. On error it returns nil and the error encoding/json
// would have returned for the first unencodable field.
func appendCanonicalEvent(dst []byte, ev *Event) ([]byte, error) {
	// The time is checked first (encoding/json's field order): its error
	// wins over a bad latency's, as in the reference.
	var tbuf [64]byte
	t, err := ev.Time.AppendText(tbuf[:0]) // MarshalJSON's text, without quotes or allocation
	if err != nil {
		if _, err := ev.Time.MarshalJSON(); err != nil {
			return nil, err // its exact error
		}
		return nil, err
	}
	var latency []byte
	var lbuf [32]byte
	if ev.LatencyMS != 0 {
		if latency, err = appendJSONFloat(lbuf[:0], ev.LatencyMS); err != nil {
			return nil, err
		}
	}
	var checkpoint []byte
	if ev.Checkpoint != nil {
		raw, err := json.Marshal(ev.Checkpoint)
		if err != nil {
			return nil, err
		}
		if checkpoint, err = canonicalize(raw); err != nil {
			return nil, err
		}
	}
	w := canonWriter{b: dst}
	w.b = append(w.b, '{')
	w.str("agent", ev.Agent)
	if len(ev.Args) > 0 {
		var kbuf [16]string // on the stack for the usual few arguments
		keys := kbuf[:0]
		for k := range ev.Args {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		w.key("args")
		w.b = append(w.b, '{')
		for i, k := range keys {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.b = appendJSONString(w.b, k)
			w.b = append(w.b, ':')
			w.b = appendJSONString(w.b, ev.Args[k])
		}
		w.b = append(w.b, '}')
	}
	w.str("args_digest", ev.ArgsDigest)
	w.str("call_id", ev.CallID)
	w.str("candidate", ev.Candidate)
	w.strs("chain", ev.Chain)
	w.raw("checkpoint", checkpoint)
	w.str("decision", ev.Decision)
	w.str("detail", ev.Detail)
	w.str("error_class", ev.ErrorClass)
	w.str("initiator", ev.Initiator)
	w.raw("latency_ms", latency)
	w.str("method", ev.Method)
	if len(ev.Passes) > 0 {
		w.key("passes")
		w.b = append(w.b, '[')
		for i, p := range ev.Passes {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			// Keys in canonical (sorted) order: allowed, errors, principal, reasons.
			w.b = append(w.b, `{"allowed":`...)
			w.b = strconv.AppendBool(w.b, p.Allowed)
			if len(p.Errors) > 0 {
				w.b = append(w.b, `,"errors":`...)
				w.b = appendJSONStrings(w.b, p.Errors)
			}
			w.b = append(w.b, `,"principal":`...)
			w.b = appendJSONString(w.b, p.Principal)
			if len(p.Reasons) > 0 {
				w.b = append(w.b, `,"reasons":`...)
				w.b = appendJSONStrings(w.b, p.Reasons)
			}
			w.b = append(w.b, '}')
		}
		w.b = append(w.b, ']')
	}
	w.str("policy_digest", ev.PolicyDigest)
	w.strs("policy_ids", ev.PolicyIDs)
	w.str("reason", ev.Reason)
	w.str("server", ev.Server)
	w.str("session", ev.Session)
	w.strs("shadow", ev.Shadow)
	w.str("shadow_outcome", ev.ShadowOutcome)
	w.str("status", ev.Status)
	w.str("target", ev.Target)
	w.str("task", ev.Task)
	w.str("tenant", ev.Tenant)
	w.key("time")
	w.b = append(w.b, '"')
	w.b = append(w.b, t...) // RFC 3339: nothing to escape
	w.b = append(w.b, '"')
	w.key("type")
	w.b = appendJSONString(w.b, string(ev.Type))
	w.key("v")
	w.b = strconv.AppendInt(w.b, int64(ev.Version), 10)
	return append(w.b, '}'), nil
}

// canonWriter appends the members of one JSON object, in the order the
// caller writes them (the caller keeps them sorted).
type canonWriter struct {
	b    []byte
	more bool
}

func (w *canonWriter) key(k string) {
	if w.more {
		w.b = append(w.b, ',')
	}
	w.more = true
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

func (w *canonWriter) str(k, v string) {
	if v != "" {
		w.key(k)
		w.b = appendJSONString(w.b, v)
	}
}

func (w *canonWriter) strs(k string, v []string) {
	if len(v) > 0 {
		w.key(k)
		w.b = appendJSONStrings(w.b, v)
	}
}

func (w *canonWriter) raw(k string, v []byte) {
	if v != nil {
		w.key(k)
		w.b = append(w.b, v...)
	}
}

// appendJSONString appends s as encoding/json would (HTML-safe escaping,
// invalid UTF-8 replaced): plain printable ASCII directly, anything else
// through encoding/json itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x7f {
			// The reference encodes, decodes and encodes again: invalid
			// UTF-8 becomes U+FFFD on the way in and is then written raw.
			enc, _ := json.Marshal(s)
			var back string
			if json.Unmarshal(enc, &back) == nil {
				enc, _ = json.Marshal(back)
			}
			return append(b, enc...)
		}
	}
	// ASCII: escaped exactly as encoding/json does (HTML-safe).
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		default: // other control characters, <, > and &
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

func appendJSONStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONFloat appends f as encoding/json prints a float64 (ES6 number
// formatting: %f between 1e-6 and 1e21, otherwise %e with a short
// exponent); NaN and infinities are handed to encoding/json for its error.
// TestAppendJSONFloat compares it with json.Marshal.
func appendJSONFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		_, err := json.Marshal(f)
		return nil, err
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}
