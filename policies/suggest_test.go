package policies

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSuggest(t *testing.T) {
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	coder := `Broker::Agent::"spiffe://example.org/agent/coder"`
	obs := []Observation{
		{Time: at, Principals: []string{`Broker::User::"alice"`, coder}, Action: ActionCallTool, Server: "notes", Target: "notes__read_note", Decision: "allow", ArgsDigest: "h1"},
		{Time: at.Add(time.Minute), Principals: []string{`Broker::User::"alice"`, coder}, Action: ActionCallTool, Server: "notes", Target: "notes__read_note", Decision: "allow", ArgsDigest: "h2"},
		{Time: at.Add(2 * time.Minute), Principals: []string{`Broker::User::"alice"`, coder}, Action: ActionCallTool, Server: "notes", Target: "notes__write_note", Decision: "needs_approval"},
		{Time: at.Add(3 * time.Minute), Principals: []string{`Broker::Workload::"spiffe://example.org/ci"`, coder}, Action: ActionReadResource, Server: "notes", Target: "note://x\n// injected", Decision: "deny"},
		{Time: at, Principals: []string{"<invalid request>"}, Action: ActionCallTool, Server: "notes", Target: "x"},          // skipped
		{Time: at, Principals: []string{`Broker::User::"a"`}, Action: ActionListTools, Server: "notes", Target: "x"},         // skipped
		{Time: at, Principals: []string{`Broker::User::"a"`}, Action: ActionCallTool, Server: "", Target: "notes__x"},        // skipped
		{Time: at, Principals: []string{`Broker::Team::"eng"`}, Action: ActionCallTool, Server: "notes", Target: "notes__x"}, // skipped
	}
	text, err := Suggest(obs, SuggestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := string(text)
	for _, want := range []string{
		"from 4 recorded decisions, 2026-03-01T10:00:00Z to 2026-03-01T10:03:00Z",
		`@id("suggested-user-alice-notes-call-tool")`,
		`principal == Broker::User::"alice"`,
		`when { ["notes__read_note", "notes__write_note"].contains(resource.name) }`,
		"//   notes__read_note: 2 calls (allow 2), 2 distinct argument sets",
		"//   notes__write_note: 1 calls (needs_approval 1), 0 distinct argument sets",
		`@id("suggested-agent-example-org-agent-coder-notes-call-tool")`,
		`@id("suggested-workload-example-org-ci-notes-read-resource")`,
		`action == Broker::Action::"read_resource"`,
		`"note://x\n// injected"`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in\n%s", want, s)
		}
	}
	if strings.Contains(s, "\n// injected") {
		t.Error("a target name broke out of a comment")
	}
	// The suggestion allows exactly what was seen.
	set := mustCompile(t, append(Baseline(), Source{Name: "s.cedar", Text: text})...)
	eng := NewEngine(set)
	r := req(ActionCallTool, tool("notes", "read_note"), nil)
	r.Chain = r.Chain[1:]
	if d := eng.Decide(r); d.Outcome != Allow {
		t.Errorf("read_note: %+v", d)
	}
	r.Target = tool("notes", "delete_note")
	if d := eng.Decide(r); d.Outcome != Deny {
		t.Errorf("delete_note: %+v", d)
	}

	coarse, err := Suggest(obs, SuggestOptions{Coarse: true})
	if err != nil || strings.Contains(string(coarse), "when {") {
		t.Fatalf("coarse: %v\n%s", err, coarse)
	}
	if _, err := Suggest(obs[4:], SuggestOptions{}); !errors.Is(err, ErrNoSources) {
		t.Errorf("err = %v", err)
	}
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{
		"spiffe://example.org/agent/coder": "example-org-agent-coder",
		"Alice@Example.COM":                "alice-example-com",
		"///":                              "x",
		strings.Repeat("a", 50) + "/tail":  strings.Repeat("a", 35) + "-tail",
	} {
		if got := slug(in); got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
	}
}
