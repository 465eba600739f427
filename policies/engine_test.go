package policies

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the want fields of testdata/cases.json from the current engine")

const casesFile = "testdata/cases.json"

func TestDecideCorpus(t *testing.T) {
	raw, err := os.ReadFile(casesFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	var cases []decisionCase
	if err := dec.Decode(&cases); err != nil {
		t.Fatalf("decode %s: %v", casesFile, err)
	}
	if len(cases) == 0 {
		t.Fatal("no cases")
	}
	set := demoSet(t)
	eng := NewEngine(set)
	names := map[string]bool{}
	for i, c := range cases {
		if names[c.Name] {
			t.Fatalf("duplicate case name %q", c.Name)
		}
		names[c.Name] = true
		t.Run(c.Name, func(t *testing.T) {
			d := eng.Decide(c.Request.toRequest(t))
			got := jsonWant{Outcome: string(d.Outcome), DeniedBy: d.DeniedBy, PolicyIDs: d.PolicyIDs}
			if got.PolicyIDs == nil {
				got.PolicyIDs = []string{}
			}
			if *update {
				cases[i].Want = got
				return
			}
			if got.Outcome != c.Want.Outcome || got.DeniedBy != c.Want.DeniedBy || !slices.Equal(got.PolicyIDs, c.Want.PolicyIDs) {
				t.Errorf("got  %+v\nwant %+v\npasses %+v", got, c.Want, d.Passes)
			}
			if d.Digest != set.Digest() {
				t.Errorf("digest %q, want %q", d.Digest, set.Digest())
			}
			if err := d.Outcome.Validate(); err != nil {
				t.Error(err)
			}
			if (d.Outcome == Allow) != (d.DeniedBy == "") {
				t.Errorf("outcome %s with DeniedBy %q", d.Outcome, d.DeniedBy)
			}
		})
	}
	if *update {
		out, err := json.MarshalIndent(cases, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(casesFile, append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDecidePasses(t *testing.T) {
	eng := NewEngine(demoSet(t))
	d := eng.Decide(req(ActionCallTool, tool("notes", "delete_note"), nil))
	want := []string{`Broker::User::"alice"`, `Broker::Agent::"spiffe://example.org/agent/planner"`, `Broker::Agent::"spiffe://example.org/agent/coder"`}
	if len(d.Passes) != len(want) {
		t.Fatalf("got %d passes, want %d", len(d.Passes), len(want))
	}
	for i, p := range d.Passes {
		if p.Principal != want[i] || p.Allowed || !slices.Equal(p.Reasons, []string{"demo-notes-no-delete"}) || len(p.Errors) != 0 {
			t.Errorf("pass %d = %+v", i, p)
		}
	}
}

// Extra policies on top of the baseline, written inline.
const (
	agentOnlyPolicy = `
@id("agents-ops")
permit (principal is Broker::Agent, action in Broker::Action::"mcp", resource in Broker::ToolServer::"ops");`
	engTeamPolicy = `
@id("eng-ops")
permit (principal is Broker::User in Broker::Team::"eng", action in Broker::Action::"mcp", resource in Broker::ToolServer::"ops");`
	codingClassPolicy = `
@id("coding-ops")
permit (principal in Broker::AgentClass::"coding", action in Broker::Action::"mcp", resource in Broker::ToolServer::"ops");`
	// Validates, but overflows (an evaluation error) for large amounts.
	overflowForbid = `
@id("overflow-forbid")
forbid (principal, action == Broker::Action::"call_tool", resource in Broker::ToolServer::"ops")
when { context.args has amount && context.args.amount * 1000000 > 5000000000 };`
	overflowPermit = `
@id("overflow-permit")
permit (principal, action == Broker::Action::"call_tool", resource in Broker::ToolServer::"ops")
when { context.args has amount && context.args.amount * 1000000 > 0 };`
	logOnlyForbid = `
@id("shadow-no-ops")
@mode("log_only")
forbid (principal, action, resource in Broker::ToolServer::"ops");`
)

func TestDecideInline(t *testing.T) {
	const big = int64(1) << 62
	tests := []struct {
		name       string
		policies   []string
		args       map[string]any
		chain      []Agent // nil = planner -> coder
		want       Outcome
		deniedBy   string
		ids        []string
		wantErrors bool
	}{
		{name: "agent-only permit is not enough when the initiator has none",
			policies: []string{agentOnlyPolicy}, want: Deny, deniedBy: `Broker::User::"alice"`},
		{name: "initiator and agent permits allow",
			policies: []string{agentOnlyPolicy, engTeamPolicy}, want: Allow, ids: []string{"eng-ops", "agents-ops"}},
		{name: "initiator team grant does not leak to agents acting for the initiator",
			policies: []string{engTeamPolicy}, want: Deny, deniedBy: `Broker::Agent::"spiffe://example.org/agent/planner"`},
		{name: "class grant covers only agents of the class",
			policies: []string{engTeamPolicy, codingClassPolicy}, want: Deny, deniedBy: `Broker::Agent::"spiffe://example.org/agent/planner"`},
		{name: "class grant with a chain of only coding agents allows",
			policies: []string{engTeamPolicy, codingClassPolicy},
			chain:    []Agent{{ID: "spiffe://example.org/agent/coder", Classes: []string{"coding"}}},
			want:     Allow, ids: []string{"eng-ops", "coding-ops"}},
		{name: "erroring forbid denies (fail closed)",
			policies: []string{agentOnlyPolicy, engTeamPolicy, overflowForbid}, args: map[string]any{"amount": big},
			want: Deny, deniedBy: `Broker::User::"alice"`, ids: []string{"overflow-forbid"}, wantErrors: true},
		{name: "same forbid without overflow allows",
			policies: []string{agentOnlyPolicy, engTeamPolicy, overflowForbid}, args: map[string]any{"amount": int64(10)},
			want: Allow, ids: []string{"eng-ops", "agents-ops"}},
		{name: "erroring permit denies",
			policies: []string{overflowPermit}, args: map[string]any{"amount": big},
			want: Deny, deniedBy: `Broker::User::"alice"`, ids: []string{"overflow-permit"}, wantErrors: true},
		{name: "log_only forbid is not enforced",
			policies: []string{agentOnlyPolicy, engTeamPolicy, logOnlyForbid}, want: Allow, ids: []string{"eng-ops", "agents-ops"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srcs := Baseline()
			for i, p := range tt.policies {
				srcs = append(srcs, Source{Name: "inline" + string(rune('a'+i)) + ".cedar", Text: []byte(p)})
			}
			eng := NewEngine(mustCompile(t, srcs...))
			r := req(ActionCallTool, tool("ops", "run"), tt.args)
			if tt.chain != nil {
				r.Chain = tt.chain
			}
			d := eng.Decide(r)
			if d.Outcome != tt.want || d.DeniedBy != tt.deniedBy || !slices.Equal(d.PolicyIDs, tt.ids) {
				t.Errorf("got %s denied by %q ids %v, want %s denied by %q ids %v\npasses %+v",
					d.Outcome, d.DeniedBy, d.PolicyIDs, tt.want, tt.deniedBy, tt.ids, d.Passes)
			}
			hasErrors := false
			for _, p := range d.Passes {
				hasErrors = hasErrors || len(p.Errors) > 0
			}
			if hasErrors != tt.wantErrors {
				t.Errorf("pass errors = %v, want %v: %+v", hasErrors, tt.wantErrors, d.Passes)
			}
		})
	}
}

func TestArgsFiltering(t *testing.T) {
	m, err := loadModel()
	if err != nil {
		t.Fatal(err)
	}
	rec := argsRecord(map[string]any{
		"amount":    int64(5),
		"currency":  "EUR",
		"path":      int64(3),   // wrong type: dropped
		"recipient": 12.5,       // float: dropped
		"name":      true,       // wrong type: dropped
		"body":      "unknown",  // not in ToolArgs: dropped
		"account":   []string{}, // unsupported: dropped
		"host":      "example.org",
	}, m.args)
	got := []string{}
	for k := range rec.All() {
		got = append(got, string(k))
	}
	slices.Sort(got)
	if want := []string{"amount", "currency", "host"}; !slices.Equal(got, want) {
		t.Errorf("kept %v, want %v", got, want)
	}
}

func TestVisible(t *testing.T) {
	eng := NewEngine(demoSet(t))
	shell := tool("notes", "read_note")
	shell.RiskTags = []string{"shell"}
	tests := []struct {
		name   string
		target Target
		args   map[string]any
		chain  []Agent
		want   bool
	}{
		{"transfer visible, args ignored", tool("payments", "transfer"), nil, nil, true},
		{"transfer visible even with a denied amount in args", tool("payments", "transfer"), map[string]any{"amount": int64(999999)}, nil, true},
		{"read note visible", tool("notes", "read_note"), nil, nil, true},
		{"write note visible (approval forbid tests args)", tool("notes", "write_note"), nil, nil, true},
		{"delete note hidden", tool("notes", "delete_note"), nil, nil, false},
		{"unknown server hidden", tool("ops", "run"), nil, nil, false},
		{"shell-tagged tool visible: an approval cures it", shell, nil, nil, true},
		{"resource visible", Target{Kind: TargetResource, Server: "notes", Name: "note://x", Exposed: "note://x"}, nil, nil, true},
		{"prompt visible", Target{Kind: TargetPrompt, Server: "notes", Name: "summarize_note", Exposed: "notes__summarize_note"}, nil, nil, true},
		{"chain too deep hidden", tool("notes", "read_note"), nil, slices.Repeat([]Agent{{ID: "spiffe://example.org/agent/a"}}, 9), false},
		{"empty chain hidden", tool("notes", "read_note"), nil, []Agent{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := req(ActionListTools, tt.target, tt.args)
			if tt.chain != nil {
				r.Chain = tt.chain
			}
			if got := eng.Visible(r); got != tt.want {
				t.Errorf("Visible = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEngineSwapConcurrent(t *testing.T) {
	a := demoSet(t)
	b := mustCompile(t, Baseline()...) // nothing permitted
	eng := NewEngine(a)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				d := eng.Decide(req(ActionCallTool, tool("notes", "read_note"), nil))
				switch d.Digest {
				case a.Digest():
					if d.Outcome != Allow {
						t.Errorf("set a: %s", d.Outcome)
					}
				case b.Digest():
					if d.Outcome != Deny {
						t.Errorf("set b: %s", d.Outcome)
					}
				default:
					t.Errorf("unknown digest %s", d.Digest)
				}
			}
		})
	}
	for i := range 200 {
		if i%2 == 0 {
			eng.Swap(b)
		} else {
			eng.Swap(a)
		}
	}
	eng.Swap(nil) // ignored
	wg.Wait()
	if eng.Set() == nil {
		t.Fatal("nil set after Swap(nil)")
	}
}

func TestClosedSets(t *testing.T) {
	for _, o := range []Outcome{Allow, Deny, NeedsApproval} {
		if err := o.Validate(); err != nil {
			t.Error(err)
		}
	}
	for _, bad := range []string{"", "Allow", "needs-approval"} {
		if Outcome(bad).Validate() == nil {
			t.Errorf("Outcome(%q) validated", bad)
		}
		if Action(bad).Validate() == nil || TargetKind(bad).Validate() == nil || InitiatorKind(bad).Validate() == nil {
			t.Errorf("%q validated", bad)
		}
	}
}

func TestTrustDomain(t *testing.T) {
	for in, want := range map[string]string{
		"spiffe://example.org/agent/x": "example.org",
		"spiffe://example.org":         "example.org",
		"alice":                        "",
		"https://example.org/x":        "",
	} {
		if got := trustDomain(in); got != want {
			t.Errorf("trustDomain(%q) = %q, want %q", in, got, want)
		}
	}
	if !strings.HasPrefix(demoSet(t).Digest(), "sha256:") {
		t.Error("digest prefix")
	}
}
