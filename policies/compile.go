package policies

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// Annotations the broker gives meaning to. cedar-go ignores all annotations.
const (
	annID       = "id"       // @id("...") names the policy; required, unique
	annApproval = "approval" // @approval("required"|"initiator"|"approver:<group>") on a forbid an approval cures
	annMode     = "mode"     // @mode("enforce"|"log_only")
)

const (
	modeEnforce = "enforce"
	modeLogOnly = "log_only"
)

// Set is an immutable compiled policy snapshot. It is safe for concurrent use;
// the zero value is not usable, build one with Compile.
type Set struct {
	digest   string
	ids      []string
	all      map[cedar.PolicyID]*cedar.Policy
	enforced cedar.PolicyMap         // what Authorize sees: every policy not in @mode("log_only")
	logOnly  cedar.PolicyMap         // @mode("log_only"): evaluated in the shadow pass only
	approval map[cedar.PolicyID]bool // forbids carrying @approval(...)
	info     map[cedar.PolicyID]PolicyInfo
	model    *model
	index    *scopeIndex // over enforced
	shadow   *scopeIndex // over logOnly; nil when there are none
	cache    *reqCache   // what repeated requests share; nil = build every request afresh
	visNow   nowDep      // how Visible's answer can depend on context.now (over enforced)
}

// PolicyInfo describes one compiled policy for explanations and tooling.
type PolicyInfo struct {
	ID       string `json:"id"`
	Effect   string `json:"effect"`             // "permit" or "forbid"
	Position string `json:"position"`           // file:line:col of the policy
	Approval string `json:"approval,omitempty"` // value of @approval, "" if none
	LogOnly  bool   `json:"log_only,omitempty"` // @mode("log_only")
	// Annotations holds every annotation of the policy, e.g. the approval
	// stage's @approval_timeout, @approval_scope and @reason.
	Annotations map[string]string `json:"-"`
}

// Policy returns what the Set knows about policy id.
func (s *Set) Policy(id string) (PolicyInfo, bool) {
	i, ok := s.info[cedar.PolicyID(id)]
	return i, ok
}

// LogOnlyIDs returns the sorted IDs of the @mode("log_only") policies.
func (s *Set) LogOnlyIDs() []string {
	ids := make([]string, 0, len(s.logOnly))
	for _, id := range sortedKeys(s.logOnly) {
		ids = append(ids, string(id))
	}
	return ids
}

// Digest returns "sha256:<hex>" over the sorted (id, canonical policy text)
// pairs. It does not depend on file names, file order, comments or layout.
func (s *Set) Digest() string { return s.digest }

// Len returns the number of policies, log_only ones included.
func (s *Set) Len() int { return len(s.ids) }

// IDs returns the sorted policy IDs, log_only ones included.
func (s *Set) IDs() []string { return slices.Clone(s.ids) }

// problem is one compile error at a source position. It matches ErrInvalidPolicy.
type problem struct {
	pos string
	msg string
}

func (p *problem) Error() string { return p.pos + ": " + p.msg }
func (p *problem) Unwrap() error { return ErrInvalidPolicy }

func posString(pos types.Position) string {
	return pos.Filename + ":" + strconv.Itoa(pos.Line) + ":" + strconv.Itoa(pos.Column)
}

// Compile parses, names, validates and lints every policy of srcs and returns
// the compiled Set. It reports every problem at once, joined (errors.Join), each
// as "file:line:col: message" and each matching ErrInvalidPolicy:
//   - syntax errors (the first per file: the parser stops there);
//   - a policy without @id, or an @id used twice (naming both positions);
//   - schema violations found by the Cedar validator (strict mode);
//   - a permit whose principal scope is `in <Team|Role|User|Workload entity>`
//     without `is <Type>` (agents have their initiator as parent during a task,
//     so such a grant would silently pass to every agent acting for a member);
//   - bad values of @approval or @mode, and @approval on a permit.
//
// An empty srcs is ErrNoSources.
func Compile(srcs []Source) (*Set, error) {
	if len(srcs) == 0 {
		return nil, ErrNoSources
	}
	m, err := loadModel()
	if err != nil {
		return nil, fmt.Errorf("load schema: %w", err)
	}
	var problems []error
	add := func(pos types.Position, format string, args ...any) {
		problems = append(problems, &problem{pos: posString(pos), msg: fmt.Sprintf(format, args...)})
	}
	s := &Set{
		all:      map[cedar.PolicyID]*cedar.Policy{},
		enforced: cedar.PolicyMap{},
		logOnly:  cedar.PolicyMap{},
		approval: map[cedar.PolicyID]bool{},
		info:     map[cedar.PolicyID]PolicyInfo{},
		model:    m,
	}
	for _, src := range srcs {
		list, err := cedar.NewPolicyListFromBytes(src.Name, src.Text)
		if err != nil {
			problems = append(problems, parseProblem(src.Name, err))
			continue
		}
		for _, p := range list {
			pos := p.Position()
			pos.Filename = src.Name
			ann := p.Annotations()
			idv, ok := ann[annID]
			if !ok || strings.TrimSpace(string(idv)) == "" {
				add(pos, "policy has no @id annotation (or an empty one)")
				continue
			}
			id := cedar.PolicyID(idv)
			prev, dup := s.all[id]
			if dup {
				add(pos, "duplicate @id %q (first defined at %s)", string(id), posString(prev.Position()))
			} else {
				s.all[id] = p
			}
			for _, e := range m.checker.check(id, p) {
				add(pos, "%s", e.Error())
			}
			if msg := lintPrincipalScope(p); msg != "" {
				add(pos, "policy %q: %s", string(id), msg)
			}
			if v, ok := ann[annApproval]; ok {
				if p.Effect() != cedar.Forbid {
					add(pos, "policy %q: @approval is only meaningful on a forbid", string(id))
				} else if !validApproval(string(v)) {
					add(pos, "policy %q: @approval(%q) must be \"required\", \"initiator\" or \"approver:<group>\"", string(id), string(v))
				} else {
					s.approval[id] = true
				}
			}
			mode := modeEnforce
			if v, ok := ann[annMode]; ok {
				mode = string(v)
				if mode != modeEnforce && mode != modeLogOnly {
					add(pos, "policy %q: @mode(%q) must be \"enforce\" or \"log_only\"", string(id), mode)
				}
			}
			if dup {
				continue
			}
			// log_only policies are compiled, validated and counted in the digest but
			// never enforced: only the shadow pass passes them to Authorize.
			if mode == modeLogOnly {
				s.logOnly[id] = p
			} else {
				s.enforced[id] = p
			}
			effect := "permit"
			if p.Effect() == cedar.Forbid {
				effect = "forbid"
			}
			s.info[id] = PolicyInfo{ID: string(id), Effect: effect, Position: posString(pos),
				Approval: string(ann[annApproval]), LogOnly: mode == modeLogOnly, Annotations: annotationMap(ann)}
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	s.ids = make([]string, 0, len(s.all))
	for id := range s.all {
		s.ids = append(s.ids, string(id))
	}
	slices.Sort(s.ids)
	s.digest = digest(s.ids, s.all)
	s.index = newScopeIndex(s.enforced)
	s.visNow = nowDependence(s.enforced)
	if len(s.logOnly) > 0 {
		s.shadow = newScopeIndex(s.logOnly)
	}
	s.cache = newReqCache(maxCachedStatics, maxCachedTasks)
	return s, nil
}

// parsePos finds the position in cedar-go's parse errors, which name the
// source "<input>" whatever the file name: `parse error at <input>:1:25 ...`.
var parsePos = regexp.MustCompile(`at \S+?:(\d+):(\d+)\s*`)

// parseProblem turns a cedar-go parse error into a problem at name:line:col.
func parseProblem(name string, err error) error {
	msg := err.Error()
	m := parsePos.FindStringSubmatchIndex(msg)
	if m == nil {
		return &problem{pos: name, msg: "syntax error: " + msg}
	}
	pos := name + ":" + msg[m[2]:m[3]] + ":" + msg[m[4]:m[5]]
	return &problem{pos: pos, msg: "syntax error: " + strings.TrimSpace(msg[m[1]:])}
}

func digest(ids []string, all map[cedar.PolicyID]*cedar.Policy) string {
	h := sha256.New()
	for _, id := range ids {
		text := all[cedar.PolicyID(id)].MarshalCedar()
		// Length-prefixed so that no (id, text) sequence can collide with another.
		fmt.Fprintf(h, "%d:%s%d:", len(id), id, len(text))
		h.Write(text)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func annotationMap[M ~map[K]V, K, V ~string](ann M) map[string]string {
	out := make(map[string]string, len(ann))
	for k, v := range ann {
		out[string(k)] = string(v)
	}
	return out
}

func validApproval(v string) bool {
	switch v {
	case "required", "initiator":
		return true
	}
	g, ok := strings.CutPrefix(v, "approver:")
	return ok && strings.TrimSpace(g) != ""
}

// initiatorTypes are the entity types an agent can reach through its parents
// (an agent is in its initiator, the initiator in its teams and roles).
var initiatorTypes = map[types.EntityType]bool{
	"Broker::Team": true, "Broker::Role": true, "Broker::User": true, "Broker::Workload": true,
}

// lintPrincipalScope returns a message if p is a permit with principal scope
// `in <Team|Role|User|Workload>` and no `is <Type>` (notes §4.3).
func lintPrincipalScope(p *cedar.Policy) string {
	if p.Effect() != cedar.Permit {
		return ""
	}
	in, ok := (*xast.Policy)(p.AST()).Principal.(xast.ScopeTypeIn)
	if !ok || !initiatorTypes[in.Entity.Type] {
		return ""
	}
	return fmt.Sprintf("permit with `principal in %s` must also say `principal is <Type> in ...`: agents are in their initiator during a task and would inherit this grant", in.Entity.String())
}

// sortedKeys is used by tests and the index to iterate deterministically.
func sortedKeys[V any](m map[cedar.PolicyID]V) []cedar.PolicyID {
	return slices.Sorted(maps.Keys(m))
}
