package policies

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// A corpus is a list of decision cases (request → expected decision and
// policy IDs) kept next to the policies it tests, in files named
// *.corpus.yaml:
//
//	cases:
//	  - name: coder may read notes
//	    request:
//	      initiator: {id: alice, groups: [eng]}
//	      chain: [{id: "spiffe://example.org/agent/coder", classes: [coding]}]
//	      tool: notes/read_note
//	      hints: {read_only: true, destructive: false, open_world: false}
//	      args: {name: private/todo}
//	    want:
//	      decision: allow
//	      policy_ids: [demo-users-demo-servers, demo-agents-demo-servers]
//
// Decoding is strict: an unknown key is an error with its line.

// CorpusNow is the request time of a case that gives none.
var CorpusNow = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// Corpus is the content of one *.corpus.yaml file.
type Corpus struct {
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
	Cases       []Case `yaml:"cases" json:"cases"`
}

// Case is one decision case.
type Case struct {
	Name    string      `yaml:"name" json:"name"`
	Request CaseRequest `yaml:"request" json:"request"`
	Want    CaseWant    `yaml:"want" json:"want"`
	// File and Line locate the case (set by ParseCorpus).
	File string `yaml:"-" json:"file,omitempty"`
	Line int    `yaml:"-" json:"line,omitempty"`
}

// CaseRequest is the readable form of a Request.
type CaseRequest struct {
	CallID    string        `yaml:"call_id,omitempty" json:"call_id,omitempty"` // default "call-1"
	Action    string        `yaml:"action,omitempty" json:"action,omitempty"`   // default from the target: call_tool, read_resource, get_prompt
	Initiator CaseInitiator `yaml:"initiator" json:"initiator"`
	Chain     []CaseAgent   `yaml:"chain" json:"chain"` // acting agent last
	// Exactly one of Tool, Resource, Prompt: "<server>/<name>".
	Tool     string         `yaml:"tool,omitempty" json:"tool,omitempty"`
	Resource string         `yaml:"resource,omitempty" json:"resource,omitempty"`
	Prompt   string         `yaml:"prompt,omitempty" json:"prompt,omitempty"`
	Exposed  string         `yaml:"exposed,omitempty" json:"exposed,omitempty"` // default "<server>__<name>" (the URI for resources)
	Hints    CaseHints      `yaml:"hints,omitempty" json:"hints,omitzero"`
	RiskTags []string       `yaml:"risk_tags,omitempty" json:"risk_tags,omitempty"`           // the target's tags (resource.riskTags)
	CallTags []string       `yaml:"call_risk_tags,omitempty" json:"call_risk_tags,omitempty"` // per-call tags (context.riskTags)
	Tenant   string         `yaml:"tenant,omitempty" json:"tenant,omitempty"`                 // the target server's tenant
	Args     map[string]any `yaml:"args,omitempty" json:"args,omitempty"`                     // canonical args; integers become Long
	Approval *CaseApproval  `yaml:"approval,omitempty" json:"approval,omitempty"`
	Now      string         `yaml:"now,omitempty" json:"now,omitempty"` // RFC 3339; default CorpusNow
	Task     *CaseTask      `yaml:"task,omitempty" json:"task,omitempty"`
}

// CaseTask is the session's task boundary (context.task).
type CaseTask struct {
	ID           string   `yaml:"id" json:"id"`
	AllowedTools []string `yaml:"allowed_tools" json:"allowed_tools"`
	ExpiresAt    string   `yaml:"expires_at" json:"expires_at"` // RFC 3339
	Purpose      string   `yaml:"purpose,omitempty" json:"purpose,omitempty"`
}

// CaseInitiator is the initiator of a case; Kind defaults to "user".
type CaseInitiator struct {
	Kind       string   `yaml:"kind,omitempty" json:"kind,omitempty"`
	ID         string   `yaml:"id" json:"id"`
	Tenant     string   `yaml:"tenant,omitempty" json:"tenant,omitempty"`
	Groups     []string `yaml:"groups,omitempty" json:"groups,omitempty"`
	SpendLimit *int64   `yaml:"spend_limit,omitempty" json:"spend_limit,omitempty"`
}

// CaseAgent is one agent of the chain.
type CaseAgent struct {
	ID      string   `yaml:"id" json:"id"`
	Classes []string `yaml:"classes,omitempty" json:"classes,omitempty"`
}

// CaseHints are the MCP tool annotations. An unset hint takes the MCP
// default for an untrusted server: read_only false, destructive true,
// idempotent false, open_world true.
type CaseHints struct {
	ReadOnly    *bool `yaml:"read_only,omitempty" json:"read_only,omitempty"`
	Destructive *bool `yaml:"destructive,omitempty" json:"destructive,omitempty"`
	Idempotent  *bool `yaml:"idempotent,omitempty" json:"idempotent,omitempty"`
	OpenWorld   *bool `yaml:"open_world,omitempty" json:"open_world,omitempty"`
}

// CaseApproval puts context.approval into the request; CallID defaults to the
// request's call ID and Granted to true.
type CaseApproval struct {
	Granted  *bool  `yaml:"granted,omitempty" json:"granted,omitempty"`
	Approver string `yaml:"approver,omitempty" json:"approver,omitempty"`
	CallID   string `yaml:"call_id,omitempty" json:"call_id,omitempty"`
}

// CaseWant is the expected result. Decision is required; the other fields
// are checked only when present.
type CaseWant struct {
	Decision string `yaml:"decision" json:"decision"`
	// PolicyIDs are compared as a set with Decision.PolicyIDs; [] demands none.
	PolicyIDs *[]string `yaml:"policy_ids,omitempty" json:"policy_ids,omitempty"`
	DeniedBy  *string   `yaml:"denied_by,omitempty" json:"denied_by,omitempty"`
	// ShadowOutcome is compared with Decision.ShadowOutcome ("" = no log_only
	// policy applied); Shadow, as a set, with "<effect>:<policy id>" of Decision.Shadow.
	ShadowOutcome *string   `yaml:"shadow_outcome,omitempty" json:"shadow_outcome,omitempty"`
	Shadow        *[]string `yaml:"shadow,omitempty" json:"shadow,omitempty"`
}

// ToRequest converts c into a Request, filling the documented defaults.
func (c CaseRequest) ToRequest() (Request, error) {
	var errs []error
	req := Request{CallID: c.CallID, Action: Action(c.Action), Now: CorpusNow, Args: map[string]any{}}
	if req.CallID == "" {
		req.CallID = "call-1"
	}
	kind := InitiatorKind(c.Initiator.Kind)
	if kind == "" {
		kind = InitiatorUser
	}
	req.Initiator = Initiator{Kind: kind, ID: c.Initiator.ID, Tenant: c.Initiator.Tenant, Groups: c.Initiator.Groups, SpendLimit: c.Initiator.SpendLimit}
	for _, a := range c.Chain {
		req.Chain = append(req.Chain, Agent{ID: a.ID, Classes: a.Classes})
	}
	var target string
	n := 0
	for kind, v := range map[TargetKind]string{TargetTool: c.Tool, TargetResource: c.Resource, TargetPrompt: c.Prompt} {
		if v != "" {
			n++
			req.Target.Kind, target = kind, v
		}
	}
	if n != 1 {
		errs = append(errs, errors.New("give exactly one of tool, resource, prompt"))
	}
	server, name, ok := strings.Cut(target, "/")
	if n == 1 && (!ok || server == "" || name == "") {
		errs = append(errs, fmt.Errorf("target %q: want <server>/<name>", target))
	}
	req.Target.Server, req.Target.Name = server, name
	req.Target.Exposed = c.Exposed
	if req.Target.Exposed == "" {
		req.Target.Exposed = server + "__" + name
		if req.Target.Kind == TargetResource {
			req.Target.Exposed = name
		}
	}
	if req.Action == "" {
		switch req.Target.Kind {
		case TargetResource:
			req.Action = ActionReadResource
		case TargetPrompt:
			req.Action = ActionGetPrompt
		default:
			req.Action = ActionCallTool
		}
	}
	hint := func(p *bool, def bool) bool {
		if p == nil {
			return def
		}
		return *p
	}
	req.Target.ReadOnly = hint(c.Hints.ReadOnly, false)
	req.Target.Destructive = hint(c.Hints.Destructive, true)
	req.Target.Idempotent = hint(c.Hints.Idempotent, false)
	req.Target.OpenWorld = hint(c.Hints.OpenWorld, true)
	req.Target.RiskTags = c.RiskTags
	req.RiskTags = c.CallTags
	req.Target.Tenant = c.Tenant
	for k, v := range c.Args {
		switch v := v.(type) {
		case int:
			req.Args[k] = int64(v)
		case int64, string, bool:
			req.Args[k] = v
		case float64:
			if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
				errs = append(errs, fmt.Errorf("args.%s: %v is not an integer (money is in minor units)", k, v))
				continue
			}
			req.Args[k] = int64(v)
		default:
			errs = append(errs, fmt.Errorf("args.%s: unsupported value %v (strings, integers and booleans only)", k, v))
		}
	}
	if c.Approval != nil {
		a := &Approval{Granted: true, Approver: c.Approval.Approver, CallID: c.Approval.CallID}
		if c.Approval.Granted != nil {
			a.Granted = *c.Approval.Granted
		}
		if a.CallID == "" {
			a.CallID = req.CallID
		}
		req.Approval = a
	}
	if c.Task != nil {
		exp, err := time.Parse(time.RFC3339, c.Task.ExpiresAt)
		if err != nil {
			errs = append(errs, fmt.Errorf("task.expires_at: %w", err))
		}
		req.Task = &Task{ID: c.Task.ID, AllowedTools: c.Task.AllowedTools, ExpiresAt: exp, Purpose: c.Task.Purpose}
	}
	if c.Now != "" {
		t, err := time.Parse(time.RFC3339, c.Now)
		if err != nil {
			errs = append(errs, fmt.Errorf("now: %w", err))
		}
		req.Now = t
	}
	return req, errors.Join(errs...)
}

// ParseCorpus decodes one corpus file strictly (unknown keys are errors) and
// checks that every case has a unique name and a valid expected decision.
func ParseCorpus(name string, data []byte) ([]Case, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty corpus", name)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var c Corpus
	dec = yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	lines := caseLines(&doc)
	var errs []error
	seen := map[string]bool{}
	for i := range c.Cases {
		cs := &c.Cases[i]
		cs.File = name
		if i < len(lines) {
			cs.Line = lines[i]
		}
		at := fmt.Sprintf("%s:%d", name, cs.Line)
		switch {
		case cs.Name == "":
			errs = append(errs, fmt.Errorf("%s: case without a name", at))
		case seen[cs.Name]:
			errs = append(errs, fmt.Errorf("%s: duplicate case name %q", at, cs.Name))
		}
		seen[cs.Name] = true
		if err := Outcome(cs.Want.Decision).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: case %q: want.decision: %w", at, cs.Name, err))
		}
		if _, err := cs.Request.ToRequest(); err != nil {
			errs = append(errs, fmt.Errorf("%s: case %q: %w", at, cs.Name, err))
		}
	}
	if len(c.Cases) == 0 {
		errs = append(errs, fmt.Errorf("%s: no cases", name))
	}
	return c.Cases, errors.Join(errs...)
}

// caseLines returns the line of every item of the top-level "cases" sequence.
func caseLines(doc *yaml.Node) []int {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "cases" {
			var out []int
			for _, item := range m.Content[i+1].Content {
				out = append(out, item.Line)
			}
			return out
		}
	}
	return nil
}

// ReadCorpora parses every *.corpus.yaml file directly in dir, in name order.
// A directory without one is ErrNoCorpus.
func ReadCorpora(dir string) ([]Case, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.corpus.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoCorpus)
	}
	slices.Sort(files)
	var all []Case
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cases, err := ParseCorpus(f, data)
		errs = append(errs, err)
		all = append(all, cases...)
	}
	return all, errors.Join(errs...)
}

// CaseResult is the outcome of one case.
type CaseResult struct {
	Case     Case     `json:"case"`
	Passed   bool     `json:"passed"`
	Got      Decision `json:"-"`
	Problems []string `json:"problems,omitempty"` // what differed, one line each
}

// RunCorpus decides every case against set (Baseline and all: exactly what
// the caller compiled) and compares with the expectations. It never stops at
// the first failure.
func RunCorpus(set *Set, cases []Case) []CaseResult {
	out := make([]CaseResult, 0, len(cases))
	for _, c := range cases {
		res := CaseResult{Case: c}
		req, err := c.Request.ToRequest()
		if err != nil {
			res.Problems = append(res.Problems, "invalid request: "+err.Error())
			out = append(out, res)
			continue
		}
		d := set.decide(req, true)
		res.Got = d
		w := c.Want
		if string(d.Outcome) != w.Decision {
			res.Problems = append(res.Problems, fmt.Sprintf("decision %s, want %s (denied by %s)", d.Outcome, w.Decision, orNone(d.DeniedBy)))
		}
		if w.PolicyIDs != nil && !sameSet(d.PolicyIDs, *w.PolicyIDs) {
			res.Problems = append(res.Problems, fmt.Sprintf("policy_ids %v, want %v", nonNil(d.PolicyIDs), *w.PolicyIDs))
		}
		if w.DeniedBy != nil && d.DeniedBy != *w.DeniedBy {
			res.Problems = append(res.Problems, fmt.Sprintf("denied_by %q, want %q", d.DeniedBy, *w.DeniedBy))
		}
		if w.ShadowOutcome != nil && string(d.ShadowOutcome) != *w.ShadowOutcome {
			res.Problems = append(res.Problems, fmt.Sprintf("shadow_outcome %q, want %q", d.ShadowOutcome, *w.ShadowOutcome))
		}
		if w.Shadow != nil {
			got := ShadowStrings(d.Shadow)
			if !sameSet(got, *w.Shadow) {
				res.Problems = append(res.Problems, fmt.Sprintf("shadow %v, want %v", nonNil(got), *w.Shadow))
			}
		}
		res.Passed = len(res.Problems) == 0
		out = append(out, res)
	}
	return out
}

// ShadowStrings renders shadow results as "<effect>:<policy id>", deduped and sorted.
func ShadowStrings(rs []ShadowResult) []string {
	var out []string
	for _, r := range rs {
		s := string(r.Effect) + ":" + r.PolicyID
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
