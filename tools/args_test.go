package tools

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestCanonicalizeGolden(t *testing.T) {
	// The canonical bytes are hashed into the audit trail and approvals:
	// they must never drift. Each line of testdata/canonical.txt is
	// "input<TAB>canonical".
	inputs := []string{
		`{}`,
		``,
		`null`,
		`{"b":1,"a":2}`,
		`{ "z" : [ 3, 2, 1 ], "a": {"y": true, "x": null} }`,
		`{"big": 12345678901234567890}`, // numbers as written (an amount this big is refused)
		`{"n": 1.50, "e": 1e3, "neg": -0}`,
		`{"s": "caf\u00e9 <b> & \"q\""}`,
		`{"path": "/workspace/../etc/passwd"}`,
	}
	var b strings.Builder
	for _, in := range inputs {
		a, err := Canonicalize([]byte(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		b.WriteString(in + "\t" + string(a.Canonical) + "\n")
	}
	path := filepath.Join("testdata", "canonical.golden")
	if *update {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if b.String() != string(want) {
		t.Errorf("canonical bytes drifted:\n got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	for name, in := range map[string]string{
		"array":    `[1,2]`,
		"string":   `"x"`,
		"number":   `3`,
		"broken":   `{"a":`,
		"trailing": `{"a":1} {"b":2}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Canonicalize([]byte(in)); !errors.Is(err, ErrBadArguments) {
				t.Errorf("err = %v, want ErrBadArguments", err)
			}
		})
	}
}

func TestCanonicalizeFields(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want map[string]any
	}{
		{"path traversal cleaned", `{"path":"/workspace/../etc/passwd"}`, map[string]any{"path": "/etc/passwd"}},
		{"relative path cannot climb", `{"path":"../../x"}`, map[string]any{"path": "x"}},
		{"url host lower-cased, default port and userinfo dropped", `{"url":"HTTPS://User:pw@Example.COM:443/a/./b"}`,
			map[string]any{"url": "https://example.com/a/b", "host": "example.com"}},
		{"host trailing dot", `{"host":"Example.org."}`, map[string]any{"host": "example.org"}},
		{"integer amount", `{"amount": 2500, "currency": " eur"}`, map[string]any{"amount": int64(2500), "currency": "EUR"}},
		{"strings", `{"recipient":"bob","name":"n","account":"a","command":"ls","other":"x"}`,
			map[string]any{"recipient": "bob", "name": "n", "account": "a", "command": "ls"}},
		{"names matched ignoring case", `{"Name":"shared/roadmap","PATH":"/a/../b","Amount":5}`,
			map[string]any{"name": "shared/roadmap", "path": "/b", "amount": int64(5)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Canonicalize([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a.Fields, tc.want) {
				t.Errorf("fields = %#v, want %#v", a.Fields, tc.want)
			}
		})
	}
}

func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,{"b":null}]}`, `{"path":"/a/../b","amount":1}`, `[`, `{"url":"http://x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := Canonicalize(b)
		if err != nil {
			return
		}
		// Canonical form is a fixed point.
		again, err := Canonicalize(a.Canonical)
		if err != nil {
			t.Fatalf("canonical form does not parse: %q: %v", a.Canonical, err)
		}
		if string(again.Canonical) != string(a.Canonical) {
			t.Fatalf("not idempotent: %q -> %q", a.Canonical, again.Canonical)
		}
	})
}

// TestCanonicalizeRefusesAmbiguity: arguments two JSON readers could read
// differently are refused, since policy and the audit trail see the
// decoded arguments and the downstream the agent's bytes.
func TestCanonicalizeRefusesAmbiguity(t *testing.T) {
	for name, raw := range map[string]string{
		"repeated key":                  `{"path":"/tmp/ok","path":"/etc/shadow"}`,
		"repeated key, other case":      `{"path":"/tmp/ok","PATH":"/etc/shadow"}`,
		"repeated key, escaped":         `{"path":"/tmp/ok","p\u0061th":"/etc/shadow"}`,
		"repeated key, nested":          `{"a":[{"x":1,"x":2}]}`,
		"repeated key, nested, escaped": `{"h":{"x":1,"\u0078":2}}`,
		"repeated key, Kelvin sign":     "{\"k\":1,\"\u212a\":2}",
		"invalid UTF-8":                 "{\"a\":\"a\xff\"}",
		"lone high surrogate":           `{"a":"\ud800"}`,
		"lone low surrogate":            `{"a":"x\udc00"}`,
		"high surrogate, then letter":   `{"a":"\ud800\u0041"}`,
		"stray closing bracket":         `{}]`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Canonicalize([]byte(raw)); !errors.Is(err, ErrBadArguments) {
				t.Fatalf("accepted %s: %v", raw, err)
			}
		})
	}
	many := `{`
	for i := range 40 {
		many += fmt.Sprintf(`"k%d":%d,`, i, i)
	}
	for name, raw := range map[string]string{
		"same key in two objects":        `{"a":{"x":1},"b":{"x":2},"x":3}`,
		"key equal to a value":           `{"a":"b","b":"a"}`,
		"surrogate pair":                 `{"a":"\ud83d\ude00"}`,
		"escaped quote in key":           `{"a\"b":1,"a":2}`,
		"many keys":                      many + `"last":1}`,
		"nested names differing in case": `{"headers":{"Content-Type":"a","content-type":"b"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Canonicalize([]byte(raw)); err != nil {
				t.Fatalf("refused %s: %v", raw, err)
			}
		})
	}
	if _, err := Canonicalize([]byte(many + `"k3":1}`)); !errors.Is(err, ErrBadArguments) {
		t.Fatal("a repeated key among many accepted")
	}
}

// TestCanonicalizeRefusesUnreadableWellKnown: a well-known argument the
// broker cannot normalize is refused, not dropped (a policy asking "has
// amount" would miss it).
func TestCanonicalizeRefusesUnreadableWellKnown(t *testing.T) {
	for name, raw := range map[string]string{
		"fractional amount":   `{"amount": 25.5}`,
		"amount in exponent":  `{"amount": 1e4}`,
		"amount as a word":    `{"amount": "ten"}`,
		"amount as an object": `{"Amount": {"v": 1}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Canonicalize([]byte(raw)); !errors.Is(err, ErrBadArguments) {
				t.Fatalf("accepted %s: %v", raw, err)
			}
		})
	}
	// Other values are seen, not dropped: as their JSON when not strings.
	for raw, want := range map[string]map[string]any{
		`{"amount": "25"}`:                 {"amount": int64(25)},
		`{"command": ["sh", "-c", "x"]}`:   {"command": `["sh","-c","x"]`},
		`{"Name": {"x": 1}}`:               {"name": `{"x":1}`},
		`{"path": ["/etc/passwd"]}`:        {"path": `["/etc/passwd"]`},
		`{"url": "/api/x"}`:                {"url": "/api/x"},
		`{"name": null, "account": 12345}`: {"account": "12345"},
	} {
		a, err := Canonicalize([]byte(raw))
		if err != nil || !reflect.DeepEqual(a.Fields, want) {
			t.Errorf("%s: fields %#v (%v), want %#v", raw, a.Fields, err, want)
		}
	}
}
