package policies

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cedar-policy/cedar-go"
)

func TestCompileErrors(t *testing.T) {
	const okA = `@id("a") forbid (principal, action, resource) when { context.chain.depth > 3 };`
	tests := []struct {
		name string
		srcs []Source
		want []string // each must appear as a line of the error
	}{
		{name: "empty list", srcs: nil, want: []string{"no policy sources"}},
		{name: "missing @id",
			srcs: []Source{{Name: "m.cedar", Text: []byte("\n\n  forbid (principal, action, resource);")}},
			want: []string{"m.cedar:3:3: policy has no @id annotation (or an empty one)"}},
		{name: "empty @id",
			srcs: []Source{{Name: "m.cedar", Text: []byte(`@id("") forbid (principal, action, resource);`)}},
			want: []string{"m.cedar:1:1: policy has no @id annotation (or an empty one)"}},
		{name: "duplicate @id across two files names both",
			srcs: []Source{{Name: "one.cedar", Text: []byte(okA)}, {Name: "two.cedar", Text: []byte("\n" + okA)}},
			want: []string{`two.cedar:2:1: duplicate @id "a" (first defined at one.cedar:1:1)`}},
		{name: "schema violation with position",
			srcs: []Source{{Name: "s.cedar", Text: []byte("// x\n@id(\"typo\")\nforbid (principal, action == Broker::Action::\"call_tool\", resource)\nwhen { context.args.paht == \"/\" };")}},
			want: []string{"s.cedar:2:1: for policy `typo`, attribute `paht` in context for Broker::Action::\"call_tool\" not found"}},
		{name: "unguarded optional attribute",
			srcs: []Source{{Name: "g.cedar", Text: []byte(`@id("g") forbid (principal, action == Broker::Action::"call_tool", resource) when { context.args.amount > 5 };`)}},
			want: []string{"g.cedar:1:1: for policy `g`, unable to guarantee safety of access to optional attribute `args.amount` in context for Broker::Action::\"call_tool\""}},
		{name: "lint: permit principal in Team without is",
			srcs: []Source{{Name: "l.cedar", Text: []byte(`@id("team") permit (principal in Broker::Team::"eng", action, resource);`)}},
			want: []string{"l.cedar:1:1: policy \"team\": permit with `principal in Broker::Team::\"eng\"` must also say `principal is <Type> in ...`: agents are in their initiator during a task and would inherit this grant"}},
		{name: "syntax error",
			srcs: []Source{{Name: "x.cedar", Text: []byte("@id(\"x\")\npermit (principal, action")}},
			want: []string{"x.cedar:2:"}},
		{name: "bad annotation values",
			srcs: []Source{{Name: "a.cedar", Text: []byte(`
@id("ap") @approval("maybe") forbid (principal, action, resource);
@id("ap2") @approval("approver:") forbid (principal, action, resource);
@id("mo") @mode("shadow") forbid (principal, action, resource);
@id("pe") @approval("required") permit (principal is Broker::User, action, resource);`)}},
			want: []string{
				`a.cedar:2:1: policy "ap": @approval("maybe") must be "required", "initiator" or "approver:<group>"`,
				`a.cedar:3:1: policy "ap2": @approval("approver:") must be "required", "initiator" or "approver:<group>"`,
				`a.cedar:4:1: policy "mo": @mode("shadow") must be "enforce" or "log_only"`,
				`a.cedar:5:1: policy "pe": @approval is only meaningful on a forbid`,
			}},
		{name: "all problems reported at once",
			srcs: []Source{
				{Name: "1.cedar", Text: []byte(okA)},
				{Name: "2.cedar", Text: []byte("permit (principal is Broker::User, action, resource);\n" + okA)},
				{Name: "3.cedar", Text: []byte("@id(\"b\") permit (principal in Broker::Role::\"r\", action, resource) when { principal.nope };")},
				{Name: "4.cedar", Text: []byte("@id(\"c\") permit (principal")},
			},
			want: []string{
				"2.cedar:1:1: policy has no @id annotation (or an empty one)",
				`2.cedar:2:1: duplicate @id "a" (first defined at 1.cedar:1:1)`,
				"3.cedar:1:1: for policy `b`, attribute `nope` on entity type `Broker::User` not found",
				"3.cedar:1:1: policy \"b\": permit with `principal in Broker::Role::\"r\"`",
				"4.cedar:1:",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Compile(tt.srcs)
			if err == nil {
				t.Fatalf("Compile succeeded with %d policies", s.Len())
			}
			if s != nil {
				t.Error("non-nil Set with an error")
			}
			if len(tt.srcs) == 0 {
				if !errors.Is(err, ErrNoSources) {
					t.Errorf("error %v is not ErrNoSources", err)
				}
			} else if !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("error %v is not ErrInvalidPolicy", err)
			}
			lines := strings.Split(err.Error(), "\n")
			for _, w := range tt.want {
				if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, w) }) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
		})
	}
}

func TestEmbeddedSourcesCompile(t *testing.T) {
	for name, srcs := range map[string][]Source{"baseline": Baseline(), "demo": Demo(), "both": append(Baseline(), Demo()...)} {
		t.Run(name, func(t *testing.T) {
			if !slices.IsSortedFunc(srcs, func(a, b Source) int { return strings.Compare(a.Name, b.Name) }) && name != "both" {
				t.Error("sources not sorted")
			}
			s := mustCompile(t, srcs...)
			if s.Len() == 0 || !slices.IsSorted(s.IDs()) {
				t.Errorf("ids %v", s.IDs())
			}
		})
	}
	// Baseline never permits anything.
	for _, id := range mustCompile(t, Baseline()...).IDs() {
		if !strings.HasPrefix(id, "baseline-") {
			t.Errorf("baseline policy %q", id)
		}
	}
	for id, p := range mustCompile(t, Baseline()...).all {
		if p.Effect() != cedar.Forbid {
			t.Errorf("baseline policy %q is a permit", id)
		}
	}
	if len(SchemaText()) == 0 {
		t.Error("empty schema")
	}
}

func TestDigest(t *testing.T) {
	srcs := append(Baseline(), Demo()...)
	base := mustCompile(t, srcs...)

	reversed := slices.Clone(srcs)
	slices.Reverse(reversed)
	renamed := slices.Clone(srcs)
	for i := range renamed {
		renamed[i].Name = "other-" + renamed[i].Name
		renamed[i].Text = append([]byte("// a comment\n\n"), renamed[i].Text...)
	}
	for name, s := range map[string][]Source{"reversed order": reversed, "renamed, comments": renamed} {
		if got := mustCompile(t, s...).Digest(); got != base.Digest() {
			t.Errorf("%s: digest %s, want %s", name, got, base.Digest())
		}
	}
	changed := append(slices.Clone(srcs), Source{Name: "z.cedar", Text: []byte(`@id("z") forbid (principal, action, resource) when { context.chain.depth > 5 };`)})
	if mustCompile(t, changed...).Digest() == base.Digest() {
		t.Error("digest did not change with an added policy")
	}
	if !strings.HasPrefix(base.Digest(), "sha256:") || len(base.Digest()) != len("sha256:")+64 {
		t.Errorf("digest format %q", base.Digest())
	}
}

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("b.cedar", `@id("b") forbid (principal, action, resource) when { context.chain.depth > 4 };`)
	write("a.cedar", `@id("a") forbid (principal, action, resource) when { context.chain.depth > 5 };`)
	write("notes.txt", "not a policy")
	if err := os.Mkdir(filepath.Join(dir, "sub.cedar"), 0o700); err != nil {
		t.Fatal(err)
	}
	srcs, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range srcs {
		names = append(names, s.Name)
	}
	if want := []string{filepath.Join(dir, "a.cedar"), filepath.Join(dir, "b.cedar")}; !slices.Equal(names, want) {
		t.Errorf("names %v, want %v", names, want)
	}
	if _, err := ReadDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing dir: no error")
	}
	if _, err := ReadDir(t.TempDir()); !errors.Is(err, ErrNoSources) {
		t.Errorf("empty dir: %v", err)
	}
	// Errors name the file as ReadDir named it.
	write("c.cedar", `forbid (principal, action, resource);`)
	srcs, _ = ReadDir(dir)
	if _, err := Compile(srcs); err == nil || !strings.HasPrefix(err.Error(), filepath.Join(dir, "c.cedar")+":1:1: ") {
		t.Errorf("error %v", err)
	}
}
