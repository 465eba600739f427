package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Args is a tool call's arguments after canonicalization.
type Args struct {
	// Canonical is the arguments as canonical JSON (sorted keys, no
	// insignificant whitespace, numbers as written): what is hashed for the
	// audit trail and approvals.
	Canonical []byte
	// Fields are normalized values of well-known argument names for
	// policy: path (cleaned), url (lower-case scheme and host), host
	// (lower-case), amount (integer minor units), currency (upper-case),
	// and the strings recipient, command, name, account. Values are
	// string, int64 or bool.
	Fields map[string]any
	// Parsed is the arguments object as decoded (numbers as json.Number);
	// read only.
	Parsed map[string]any
}

// Canonicalize parses raw tool arguments, which must be a JSON object (or
// absent), and normalizes them. It never modifies what is forwarded: the
// downstream gets the agent's bytes.
func Canonicalize(raw []byte) (Args, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return Args{Canonical: []byte("{}"), Fields: map[string]any{}, Parsed: map[string]any{}}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return Args{}, fmt.Errorf("%w: %v", ErrBadArguments, err)
	}
	if len(bytes.TrimSpace(raw[dec.InputOffset():])) > 0 { // dec.More misses a stray ] or }
		return Args{}, fmt.Errorf("%w: trailing data", ErrBadArguments)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return Args{}, ErrBadArguments
	}
	if err := unambiguous(raw); err != nil {
		return Args{}, fmt.Errorf("%w: %v", ErrBadArguments, err)
	}
	var buf bytes.Buffer
	if err := writeCanonical(&buf, obj); err != nil {
		return Args{}, err
	}
	f, err := fields(obj)
	if err != nil {
		return Args{}, fmt.Errorf("%w: %v", ErrBadArguments, err)
	}
	return Args{Canonical: buf.Bytes(), Fields: f, Parsed: obj}, nil
}

func writeCanonical(b *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		if x {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case json.Number:
		b.WriteString(x.String())
	case string:
		enc, err := json.Marshal(x)
		if err != nil {
			return err
		}
		b.Write(enc)
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeCanonical(b, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			enc, err := json.Marshal(k)
			if err != nil {
				return err
			}
			b.Write(enc)
			b.WriteByte(':')
			if err := writeCanonical(b, x[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	default:
		return fmt.Errorf("unexpected JSON value %T", v)
	}
	return nil
}

// wellKnown are the argument names policy sees normalized (Fields).
var wellKnown = [...]string{"path", "url", "host", "amount", "currency", "recipient", "command", "name", "account"}

// fields normalizes the well-known arguments for policy. A name is matched
// ignoring case, as encoding/json matches struct fields (a downstream that
// reads "Name" into its name field must not slip past a policy on name;
// unambiguous has refused two spellings of one name). A null is absent; a
// value that is not a string is seen as its compact JSON (so "has command"
// sees a command given as an array); an amount that is not an integer is an
// error: dropping it would let a policy that asks "has amount" miss it.
func fields(obj map[string]any) (map[string]any, error) {
	out := map[string]any{}
	// One pass over the keys finds every well-known one: exact first, then
	// ignoring case (only keys short enough to fold to a well-known name).
	var vals [len(wellKnown)]any
	var has [len(wellKnown)]bool
	for k, v := range obj {
		i := slices.Index(wellKnown[:], k)
		if i < 0 && len(k) <= 4*len("recipient") {
			i = slices.IndexFunc(wellKnown[:], func(n string) bool { return strings.EqualFold(k, n) })
		}
		if i >= 0 {
			vals[i], has[i] = v, true
		}
	}
	get := func(name string) (any, bool) {
		i := slices.Index(wellKnown[:], name)
		return vals[i], has[i] && vals[i] != nil // null is absent
	}
	// text is a value as policy reads a string: a string as it is, any
	// other value (an array, an object, a number, a boolean) as its compact
	// JSON, so that "has command" sees a command given as an array too.
	text := func(v any) string {
		if s, ok := v.(string); ok {
			return s
		}
		var b bytes.Buffer
		_ = writeCanonical(&b, v)
		return b.String()
	}
	for _, name := range wellKnown {
		v, ok := get(name)
		if !ok {
			continue
		}
		switch name {
		case "amount":
			// Minor units, as an integer: a number, or a string of one
			// (prompt arguments are strings). Anything else cannot be
			// compared to a limit, so it is refused rather than dropped.
			var n json.Number
			switch x := v.(type) {
			case json.Number:
				n = x
			case string:
				n = json.Number(strings.TrimSpace(x))
			}
			i, err := n.Int64()
			if err != nil {
				return nil, fmt.Errorf("argument %q must be an integer amount in minor units", name)
			}
			out[name] = i
			continue
		}
		s := text(v)
		switch name {
		case "path":
			if s != "" {
				out["path"] = cleanPath(s)
			}
		case "url":
			if s == "" {
				continue
			}
			if u, h, ok := cleanURL(s); ok {
				out["url"] = u
				if _, set := get("host"); !set {
					out["host"] = h
				}
			} else {
				out["url"] = s // relative, or not a URL: as given, with no host
			}
		case "host":
			if s != "" {
				out["host"] = strings.TrimSuffix(strings.ToLower(s), ".")
			}
		case "currency":
			out["currency"] = strings.ToUpper(strings.TrimSpace(s))
		default:
			out[name] = s
		}
	}
	return out, nil
}

// cleanPath resolves "." and ".." lexically so a policy's prefix test on
// "/workspace/*" cannot be escaped with "/workspace/../etc".
func cleanPath(p string) string {
	if strings.HasPrefix(p, "/") {
		return path.Clean(p)
	}
	c := path.Clean("/" + p)
	return strings.TrimPrefix(c, "/")
}

func cleanURL(s string) (string, string, bool) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", "", false
	}
	u.Scheme = strings.ToLower(u.Scheme)
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	port := u.Port()
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	u.Host = host
	if port != "" {
		u.Host = host + ":" + port
	}
	u.User = nil
	if u.Path != "" {
		u.Path = path.Clean(u.Path)
	}
	return u.String(), host, true
}

// unambiguous refuses arguments that two JSON readers could read
// differently, since policy, the audit trail and approvals see the decoded
// arguments while the downstream gets the agent's bytes: a key repeated in
// one object (also under case folding, as encoding/json matches struct
// fields; the first or the last copy wins depending on the reader), bytes
// that are not UTF-8, and a \u escape of a lone surrogate (both decode to
// U+FFFD). raw is valid JSON.
func unambiguous(raw []byte) error {
	if !utf8.Valid(raw) {
		return errors.New("not valid UTF-8")
	}
	// Frames and keys live in small arrays on the stack: the common
	// argument object costs no allocation to check. Keys are compared
	// under Unicode simple case folding (bytes.EqualFold); an object past
	// 32 keys switches to a set of folded keys.
	type frame struct {
		obj, expectKey bool
		start          int             // its first key in keys
		set            map[string]bool // past 32 keys
	}
	var frameBuf [16]frame
	var keyBuf [32][]byte
	frames, keys := frameBuf[:0], keyBuf[:0]
	for i := 0; i < len(raw); {
		switch raw[i] {
		case '{':
			frames = append(frames, frame{obj: true, expectKey: true, start: len(keys)})
			i++
		case '[':
			frames = append(frames, frame{})
			i++
		case '}', ']':
			if len(frames) == 0 {
				return errors.New("unbalanced")
			}
			if f := frames[len(frames)-1]; f.obj {
				keys = keys[:f.start]
			}
			frames = frames[:len(frames)-1]
			i++
		case ',':
			if len(frames) == 0 {
				return errors.New("unbalanced")
			}
			if f := &frames[len(frames)-1]; f.obj {
				f.expectKey = true
			}
			i++
		case '"':
			end, escaped, err := scanString(raw, i)
			if err != nil {
				return err
			}
			if n := len(frames); n > 0 && frames[n-1].obj && frames[n-1].expectKey {
				f := &frames[n-1]
				key := raw[i+1 : end-1]
				if escaped {
					var k string
					if err := json.Unmarshal(raw[i:end], &k); err != nil {
						return err
					}
					key = []byte(k)
				}
				// Case is ignored at the top level, where the arguments
				// policy reads live; below it only exact repeats count
				// (a map of HTTP headers may spell a name two ways).
				fold := n == 1
				norm := func(k []byte) string {
					if fold {
						return foldKey(k)
					}
					return string(k)
				}
				dup := false
				if f.set != nil {
					fk := norm(key)
					dup = f.set[fk]
					f.set[fk] = true
				} else {
					for _, k := range keys[f.start:] {
						if fold && bytes.EqualFold(k, key) || !fold && bytes.Equal(k, key) {
							dup = true
							break
						}
					}
					if keys = append(keys, key); len(keys)-f.start > 32 {
						f.set = make(map[string]bool, 64)
						for _, k := range keys[f.start:] {
							f.set[norm(k)] = true
						}
					}
				}
				if dup {
					return fmt.Errorf("key %s appears more than once in one object (at the top level, ignoring case)", strconv.Quote(string(key)))
				}
				f.expectKey = false
			}
			i = end
		default:
			i++
		}
	}
	return nil
}

// foldKey maps every rune of k to the least rune of its simple case
// folding orbit: two keys bytes.EqualFold calls equal have the same foldKey.
func foldKey(k []byte) string {
	var b strings.Builder
	for _, r := range string(k) {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

// scanString returns the index after the string that starts at raw[i]
// (a quote), whether it has escapes, and an error for a lone surrogate.
func scanString(raw []byte, i int) (int, bool, error) {
	escaped := false
	for j := i + 1; j < len(raw); j++ {
		switch raw[j] {
		case '"':
			return j + 1, escaped, nil
		case '\\':
			escaped = true
			j++
			if j < len(raw) && raw[j] == 'u' {
				r := hex4(raw, j+1)
				j += 4
				switch {
				case r >= 0xD800 && r <= 0xDBFF:
					if j+6 < len(raw) && raw[j+1] == '\\' && raw[j+2] == 'u' {
						if lo := hex4(raw, j+3); lo >= 0xDC00 && lo <= 0xDFFF {
							j += 6
							continue
						}
					}
					return 0, false, errors.New("a string has a lone surrogate escape")
				case r >= 0xDC00 && r <= 0xDFFF:
					return 0, false, errors.New("a string has a lone surrogate escape")
				}
			}
		}
	}
	return 0, false, errors.New("unterminated string")
}

// hex4 reads four hex digits at raw[i:] (-1 if they are not).
func hex4(raw []byte, i int) int {
	if i+4 > len(raw) {
		return -1
	}
	n, err := strconv.ParseUint(string(raw[i:i+4]), 16, 32)
	if err != nil {
		return -1
	}
	return int(n)
}
