package tools

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseToolKeepsSchemasByteExact(t *testing.T) {
	in := `{"name":"rich","description":"d","inputSchema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","description":"top","anyOf":[{"required":["a"]},{"required":["b"]}],"$defs":{"x":{"type":"string"}},"properties":{"a":{"$ref":"#/$defs/x"},"b":{"type":"integer"}},"additionalProperties":false},"outputSchema":{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]},"annotations":{"readOnlyHint":true,"destructiveHint":false}}`
	page := json.RawMessage(`{"tools":[` + in + `]}`)
	for _, trusted := range []bool{true, false} {
		spec := &Spec{Name: "srv", Prefix: "srv__", Trusted: trusted}
		tools, err := parseTools(spec, []json.RawMessage{page})
		if err != nil {
			t.Fatal(err)
		}
		tl := tools[0]
		var raw struct {
			In  json.RawMessage `json:"inputSchema"`
			Out json.RawMessage `json:"outputSchema"`
		}
		_ = json.Unmarshal([]byte(in), &raw)
		out, err := json.Marshal(tl.Def)
		if err != nil {
			t.Fatal(err)
		}
		var back struct {
			Name string          `json:"name"`
			In   json.RawMessage `json:"inputSchema"`
			Out  json.RawMessage `json:"outputSchema"`
		}
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatal(err)
		}
		if string(back.In) != string(raw.In) || string(back.Out) != string(raw.Out) {
			t.Errorf("schemas changed:\n in  %s\n out %s\n in  %s\n out %s", raw.In, back.In, raw.Out, back.Out)
		}
		if back.Name != "srv__rich" || tl.Name != "rich" || tl.Exposed != "srv__rich" {
			t.Errorf("names: def %q name %q exposed %q", back.Name, tl.Name, tl.Exposed)
		}
		if trusted && (!tl.ReadOnly || tl.Destructive) {
			t.Errorf("trusted server's hints not applied: %+v", tl)
		}
		if !trusted && (tl.ReadOnly || !tl.Destructive || !tl.OpenWorld || tl.Idempotent) {
			t.Errorf("untrusted server's hints believed: %+v", tl)
		}
	}
}

func cat(server string, tools ...string) *serverCatalog {
	c := &serverCatalog{}
	for _, n := range tools {
		c.tools = append(c.tools, Tool{Server: server, Name: n, Exposed: n})
	}
	return c
}

func TestCollisionsAtStartup(t *testing.T) {
	errs := collisions([]string{"a", "b"}, map[string]*serverCatalog{"a": cat("a", "x", "y"), "b": cat("b", "y")})
	if len(errs) != 1 || !errors.Is(errs[0], ErrCollision) ||
		!strings.Contains(errs[0].Error(), `"a"`) || !strings.Contains(errs[0].Error(), `"b"`) {
		t.Fatalf("errs = %v, want one collision naming both servers", errs)
	}
}

func TestMergeWithholdsLaterCollision(t *testing.T) {
	owners := map[string]string{}
	order := []string{"a", "b"}
	s := merge(order, map[string]*serverCatalog{"a": cat("a", "x"), "b": cat("b", "z")}, owners)
	if len(s.Tools) != 2 {
		t.Fatalf("tools = %d", len(s.Tools))
	}
	// b now also offers x (list_changed): a keeps it, b's is withheld.
	s = merge(order, map[string]*serverCatalog{"a": cat("a", "x"), "b": cat("b", "z", "x")}, owners)
	if got, _ := s.Tool("x"); got.Server != "a" || len(s.Withheld) != 1 {
		t.Fatalf("x owned by %q, withheld %v", got.Server, s.Withheld)
	}
	// Even when b comes first in order, ownership sticks.
	s = merge([]string{"b", "a"}, map[string]*serverCatalog{"a": cat("a", "x"), "b": cat("b", "z", "x")}, owners)
	if got, _ := s.Tool("x"); got.Server != "a" {
		t.Fatalf("x taken over by %q", got.Server)
	}
	// a drops x: b may have it.
	s = merge(order, map[string]*serverCatalog{"a": cat("a"), "b": cat("b", "z", "x")}, owners)
	if got, ok := s.Tool("x"); !ok || got.Server != "b" {
		t.Fatalf("x not released to b: %+v", got)
	}
}
