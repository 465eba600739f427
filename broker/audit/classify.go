package audit

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Class is how an argument field may appear in the ledger. It is a closed
// set; see Validate.
type Class string

// Argument classes.
const (
	// Public values are stored as given (strings verbatim, other values as
	// their JSON), truncated to MaxPublicLen bytes.
	Public Class = "public"
	// Sensitive values are stored as Hasher digests, so equal values can
	// be searched for (`mcpbroker audit hash VALUE`) but not read.
	Sensitive Class = "sensitive"
	// Secret values are replaced by Redacted.
	Secret Class = "secret"
)

// Redacted replaces a secret value in Event.Args.
const Redacted = "[redacted]"

// MaxPublicLen caps a public value in the ledger; longer values are cut and
// end in "…".
const MaxPublicLen = 256

// maxArgFields caps the fields one summary holds; the rest are counted under
// the key "…".
const maxArgFields = 64

// maxArgDepth is how deep Classify descends into nested objects; deeper
// values are classified as a whole at that depth.
const maxArgDepth = 4

// Validate returns an error wrapping ErrInvalidClass unless c is Public,
// Sensitive or Secret.
func (c Class) Validate() error {
	switch c {
	case Public, Sensitive, Secret:
		return nil
	}
	return fmt.Errorf("argument class %q: %w", string(c), ErrInvalidClass)
}

// Classes maps argument field paths to their class for one tool. A nested
// field's path joins object keys with "." ("auth.token"). A field not in the
// map is Secret when its name looks like a credential (IsSecretName), and
// Sensitive otherwise; an entry in the map always wins.
type Classes map[string]Class

// Validate reports every field with an invalid class.
func (cs Classes) Validate() error {
	var bad []string
	for f, c := range cs {
		if c.Validate() != nil {
			bad = append(bad, fmt.Sprintf("%s: %q", f, string(c)))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("argument classes %s: %w", strings.Join(bad, ", "), ErrInvalidClass)
	}
	return nil
}

// secretWords are matched against field names lower-cased with "_", "-",
// "." and spaces removed.
var secretWords = []string{
	"secret", "token", "password", "passwd", "passphrase", "apikey", "credential",
	"authorization", "privatekey", "accesskey", "cookie", "bearer", "signature",
}

// IsSecretName reports whether a field name looks like it holds a
// credential: secret, token, password, apikey, credential, authorization and
// similar, in any case and with any separators.
func IsSecretName(name string) bool {
	n := strings.Map(func(r rune) rune {
		switch r {
		case '_', '-', '.', ' ':
			return -1
		}
		return r
	}, strings.ToLower(name))
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// Classify returns the argument summary of a call for Event.Args: one entry
// per field (nested objects flattened to dotted paths), public values as
// given, sensitive values as h digests (of the string's bytes, or of the
// value's compact JSON for other types, which is what `audit hash` computes)
// and secrets as Redacted. rules may be nil. A field whose own name or any
// enclosing object's name looks secret is Secret unless rules names it.
// Arrays are classified as one value. args is not modified.
func Classify(h *Hasher, rules Classes, args map[string]any) map[string]string {
	if len(args) == 0 {
		return nil
	}
	out := make(map[string]string, len(args))
	var walk func(prefix string, m map[string]any, depth int, inheritedSecret bool)
	walk = func(prefix string, m map[string]any, depth int, inheritedSecret bool) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			path := k
			if prefix != "" {
				path = prefix + "." + k
			}
			secret := inheritedSecret || IsSecretName(k)
			v := m[k]
			if sub, ok := v.(map[string]any); ok && depth < maxArgDepth {
				if _, explicit := rules[path]; !explicit {
					walk(path, sub, depth+1, secret)
					continue
				}
			}
			if len(out) >= maxArgFields {
				out["…"] = "more fields omitted"
				return
			}
			class, explicit := rules[path]
			if !explicit {
				class = Sensitive
				if secret {
					class = Secret
				}
			}
			out[path] = classValue(h, class, v)
		}
	}
	walk("", args, 1, false)
	return out
}

func classValue(h *Hasher, c Class, v any) string {
	switch c {
	case Public:
		s := valueText(v)
		if len(s) > MaxPublicLen {
			cut := MaxPublicLen
			for cut > 0 && !utf8Start(s[cut]) {
				cut--
			}
			s = s[:cut] + "…"
		}
		return s
	case Sensitive:
		return h.Digest([]byte(valueText(v)))
	}
	return Redacted // Secret, and any invalid class: fail closed
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// valueText is a string's own text, or any other value's compact JSON.
func valueText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}
