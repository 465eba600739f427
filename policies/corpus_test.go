package policies

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCorpusDemo runs the demo corpus (policies/demo/*.corpus.yaml) against
// Baseline()+Demo(): the same set `mcpbroker serve --demo` enforces.
func TestCorpusDemo(t *testing.T) {
	cases, err := ReadCorpora("demo")
	if err != nil {
		t.Fatal(err)
	}
	runCorpusTest(t, demoSet(t), cases)
}

// TestCorpusExamples runs every library entry in examples/policies/*/ with
// its corpus, the way `mcpbroker policy test DIR` does.
func TestCorpusExamples(t *testing.T) {
	dirs, _ := filepath.Glob("../examples/policies/*")
	n := 0
	for _, dir := range dirs {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		n++
		t.Run(filepath.Base(dir), func(t *testing.T) {
			set, err := LoadDir(dir, Baseline()...)
			if err != nil {
				t.Fatal(err)
			}
			cases, err := ReadCorpora(dir)
			if err != nil {
				t.Fatal(err)
			}
			runCorpusTest(t, set, cases)
		})
	}
	if n == 0 {
		t.Fatal("no library entries in ../examples/policies")
	}
}

func runCorpusTest(t *testing.T, set *Set, cases []Case) {
	t.Helper()
	for _, r := range RunCorpus(set, cases) {
		t.Run(r.Case.Name, func(t *testing.T) {
			for _, p := range r.Problems {
				t.Errorf("%s:%d: %s", r.Case.File, r.Case.Line, p)
			}
		})
	}
}

func TestParseCorpusErrors(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"unknown key", "cases:\n  - name: a\n    request: {initiator: {id: u}, chain: [{id: a}], tool: s/t}\n    want: {decison: allow}\n", "line 4: field decison not found"},
		{"bad decision", "cases:\n  - name: a\n    request: {initiator: {id: u}, chain: [{id: a}], tool: s/t}\n    want: {decision: maybe}\n", "x.corpus.yaml:2: case \"a\": want.decision"},
		{"two targets", "cases:\n  - name: a\n    request: {initiator: {id: u}, chain: [{id: a}], tool: s/t, prompt: s/p}\n    want: {decision: deny}\n", "exactly one of tool"},
		{"bad target", "cases:\n  - name: a\n    request: {initiator: {id: u}, chain: [{id: a}], tool: st}\n    want: {decision: deny}\n", "want <server>/<name>"},
		{"float money", "cases:\n  - name: a\n    request: {initiator: {id: u}, chain: [{id: a}], tool: s/t, args: {amount: 1.5}}\n    want: {decision: deny}\n", "not an integer"},
		{"duplicate", "cases:\n  - name: a\n    request: {initiator: {id: u}, chain: [{id: a}], tool: s/t}\n    want: {decision: deny}\n  - name: a\n    request: {initiator: {id: u}, chain: [{id: a}], tool: s/t}\n    want: {decision: deny}\n", "x.corpus.yaml:5: duplicate case name"},
		{"empty", "", "empty corpus"},
		{"no cases", "cases: []\n", "no cases"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCorpus("x.corpus.yaml", []byte(tt.text))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestRunCorpusReportsEveryFailure(t *testing.T) {
	text := `cases:
  - name: right
    request: {initiator: {id: alice}, chain: [{id: coder}], tool: notes/delete_note}
    want: {decision: deny, policy_ids: [demo-notes-no-delete], denied_by: 'Broker::User::"alice"'}
  - name: wrong decision and ids
    request: {initiator: {id: alice}, chain: [{id: coder}], tool: notes/delete_note}
    want: {decision: allow, policy_ids: []}
  - name: wrong shadow
    request: {initiator: {id: alice}, chain: [{id: coder}], tool: notes/read_note}
    want: {decision: allow, shadow_outcome: deny, shadow: ["shadow_deny:x"]}
`
	cases, err := ParseCorpus("t.corpus.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	res := RunCorpus(demoSet(t), cases)
	if !res[0].Passed || res[1].Passed || res[2].Passed {
		t.Fatalf("passed = %v %v %v", res[0].Passed, res[1].Passed, res[2].Passed)
	}
	if len(res[1].Problems) != 2 || len(res[2].Problems) != 2 {
		t.Errorf("problems: %q / %q", res[1].Problems, res[2].Problems)
	}
	if res[1].Case.Line != 5 {
		t.Errorf("line %d", res[1].Case.Line)
	}
}

func TestReadCorporaEmptyDir(t *testing.T) {
	if _, err := ReadCorpora(t.TempDir()); !errors.Is(err, ErrNoCorpus) {
		t.Fatalf("err = %v", err)
	}
}
