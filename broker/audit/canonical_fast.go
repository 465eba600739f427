package audit

import (
	"encoding/json"
	"slices"
	"strconv"
)

// canonicalEvent writes the canonical JSON of ev directly: the same bytes as
// canonicalize(json.Marshal(ev)) (TestCanonicalFastMatchesGeneric checks it
// on random events, the golden test pins it), without the encode, decode
// and re-encode round trip that cost about 150 allocations per record.
func canonicalEvent(ev *Event) ([]byte, error) {
	type kv struct {
		k string
		v []byte
	}
	fields := make([]kv, 0, 20)
	str := func(k, v string) {
		if v != "" {
			fields = append(fields, kv{k, appendJSONString(nil, v)})
		}
	}
	strs := func(k string, v []string) {
		if len(v) > 0 {
			fields = append(fields, kv{k, appendJSONStrings(nil, v)})
		}
	}
	fields = append(fields, kv{"type", appendJSONString(nil, string(ev.Type))})
	fields = append(fields, kv{"v", strconv.AppendInt(nil, int64(ev.Version), 10)})
	t, err := ev.Time.MarshalJSON()
	if err != nil {
		return nil, err
	}
	fields = append(fields, kv{"time", t})
	str("call_id", ev.CallID)
	str("session", ev.Session)
	str("agent", ev.Agent)
	str("initiator", ev.Initiator)
	str("tenant", ev.Tenant)
	strs("chain", ev.Chain)
	str("task", ev.Task)
	str("method", ev.Method)
	str("server", ev.Server)
	str("target", ev.Target)
	str("args_digest", ev.ArgsDigest)
	if len(ev.Args) > 0 {
		keys := make([]string, 0, len(ev.Args))
		for k := range ev.Args {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b := []byte{'{'}
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, ev.Args[k])
		}
		fields = append(fields, kv{"args", append(b, '}')})
	}
	str("decision", ev.Decision)
	str("reason", ev.Reason)
	strs("policy_ids", ev.PolicyIDs)
	str("policy_digest", ev.PolicyDigest)
	if len(ev.Passes) > 0 {
		b := []byte{'['}
		for i, p := range ev.Passes {
			if i > 0 {
				b = append(b, ',')
			}
			// Keys in canonical (sorted) order: allowed, errors, principal, reasons.
			b = append(b, `{"allowed":`...)
			b = strconv.AppendBool(b, p.Allowed)
			if len(p.Errors) > 0 {
				b = append(b, `,"errors":`...)
				b = appendJSONStrings(b, p.Errors)
			}
			b = append(b, `,"principal":`...)
			b = appendJSONString(b, p.Principal)
			if len(p.Reasons) > 0 {
				b = append(b, `,"reasons":`...)
				b = appendJSONStrings(b, p.Reasons)
			}
			b = append(b, '}')
		}
		fields = append(fields, kv{"passes", append(b, ']')})
	}
	str("shadow_outcome", ev.ShadowOutcome)
	strs("shadow", ev.Shadow)
	str("candidate", ev.Candidate)
	str("status", ev.Status)
	str("error_class", ev.ErrorClass)
	if ev.LatencyMS != 0 {
		b, err := json.Marshal(ev.LatencyMS) // encoding/json's float format
		if err != nil {
			return nil, err
		}
		fields = append(fields, kv{"latency_ms", b})
	}
	str("detail", ev.Detail)
	if ev.Checkpoint != nil {
		raw, err := json.Marshal(ev.Checkpoint)
		if err != nil {
			return nil, err
		}
		b, err := canonicalize(raw)
		if err != nil {
			return nil, err
		}
		fields = append(fields, kv{"checkpoint", b})
	}
	slices.SortFunc(fields, func(a, b kv) int {
		switch {
		case a.k < b.k:
			return -1
		case a.k > b.k:
			return 1
		}
		return 0
	})
	n := 2
	for _, f := range fields {
		n += len(f.k) + len(f.v) + 4
	}
	out := make([]byte, 0, n)
	out = append(out, '{')
	for i, f := range fields {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, '"')
		out = append(out, f.k...)
		out = append(out, '"', ':')
		out = append(out, f.v...)
	}
	return append(out, '}'), nil
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
