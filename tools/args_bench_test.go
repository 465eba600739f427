package tools

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkCanonicalize is argument canonicalization as the pipeline runs
// it on every call: a small call, a typical one with the fields policy
// reads, and one 100 KiB argument.
func BenchmarkCanonicalize(b *testing.B) {
	cases := []struct{ name, raw string }{
		{"small", `{"key":"k"}`},
		{"fields", `{"path":"/workspace/a/../b/c.txt","url":"HTTPS://Example.COM/x?q=1","amount":12345,"currency":"eur","recipient":"bob","note":"lunch","tags":["a","b"]}`},
		{"blob=100KiB", fmt.Sprintf(`{"text":"hello","blob":%q}`, strings.Repeat("x", 100<<10))},
	}
	for _, c := range cases {
		raw := []byte(c.raw)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := Canonicalize(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseTools is catalog ingestion of one tools/list of 1,000 tools
// (schemas kept byte-exact), what a list_changed from a large server costs.
func BenchmarkParseTools(b *testing.B) {
	var tools []string
	for i := range 1000 {
		tools = append(tools, fmt.Sprintf(`{"name":"tool_%04d","description":"Filler tool %d.","inputSchema":{"type":"object","properties":{"path":{"type":"string","description":"a path"},"limit":{"type":"number"}}},"annotations":{"readOnlyHint":true}}`, i, i))
	}
	page := json.RawMessage(`{"tools":[` + strings.Join(tools, ",") + `]}`)
	spec := &Spec{Name: "big", Prefix: "big__", Trusted: true}
	b.ReportAllocs()
	b.SetBytes(int64(len(page)))
	for b.Loop() {
		ts, err := parseTools(spec, []json.RawMessage{page})
		if err != nil || len(ts) != 1000 {
			b.Fatal(len(ts), err)
		}
	}
}
