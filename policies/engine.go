package policies

import (
	"context"
	"slices"
	"sync/atomic"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/cedar-policy/cedar-go/x/exp/batch"
)

// Engine decides requests against the current Set. It is safe for concurrent
// use; Swap replaces the Set atomically, and each decision uses exactly one Set
// (the one whose digest it reports).
type Engine struct {
	set atomic.Pointer[Set]
}

// NewEngine returns an engine serving set, which must be non-nil.
func NewEngine(set *Set) *Engine {
	if set == nil {
		panic("policies: NewEngine with a nil Set")
	}
	e := &Engine{}
	e.set.Store(set)
	return e
}

// Swap makes set the current Set for every later decision. A nil set is ignored
// (the engine never runs without policies).
func (e *Engine) Swap(set *Set) {
	if set != nil {
		e.set.Store(set)
	}
}

// Set returns the current Set.
func (e *Engine) Set() *Set { return e.set.Load() }

// invalidPrincipal names the single pass of a request that failed validation.
const invalidPrincipal = "<invalid request>"

// passResult is one pass with what the outcome logic needs beyond Pass.
type passResult struct {
	cedarAllow bool
	reasons    []cedar.PolicyID
	errors     []cedar.PolicyID
}

// evalFunc evaluates one principal with the given context.
type evalFunc func(principal types.EntityUID, ctx types.Value) (types.Decision, types.Diagnostic)

// runPasses evaluates every principal in order (all of them: the audit record
// wants each hop) and reports whether all allowed.
func runPasses(principals []types.EntityUID, ctx types.Value, eval evalFunc) ([]Pass, []passResult, bool) {
	passes := make([]Pass, len(principals))
	results := make([]passResult, len(principals))
	all := true
	for i, p := range principals {
		dec, diag := eval(p, ctx)
		pass := Pass{Principal: p.String(), Allowed: dec == cedar.Allow && len(diag.Errors) == 0}
		res := passResult{cedarAllow: dec == cedar.Allow}
		for _, r := range diag.Reasons {
			pass.Reasons = append(pass.Reasons, string(r.PolicyID))
			res.reasons = append(res.reasons, r.PolicyID)
		}
		for _, e := range diag.Errors {
			pass.Errors = append(pass.Errors, e.String())
			res.errors = append(res.errors, e.PolicyID)
		}
		// Cedar reports in policy iteration order; sort for stable output.
		slices.Sort(pass.Reasons)
		slices.Sort(pass.Errors)
		slices.Sort(res.reasons)
		slices.Sort(res.errors)
		passes[i], results[i] = pass, res
		all = all && pass.Allowed
	}
	return passes, results, all
}

// approvalCurable reports whether a deny could be cured by an approval: no pass
// errored, and every denying pass was denied by forbids that all carry @approval.
func (s *Set) approvalCurable(passes []Pass, results []passResult) bool {
	for i, r := range results {
		if len(r.errors) > 0 {
			return false
		}
		if passes[i].Allowed {
			continue
		}
		if r.cedarAllow || len(r.reasons) == 0 {
			return false
		}
		for _, id := range r.reasons {
			if !s.approval[id] {
				return false
			}
		}
	}
	return true
}

// Decide evaluates req once per principal (initiator first, then each agent of
// the chain in order) and combines the passes: Allow only if every pass allowed
// with no evaluation error. A deny that only @approval forbids caused, and that
// a hypothetical approval for this CallID would turn into an allow in every
// pass, is NeedsApproval (Passes and PolicyIDs then describe the real
// evaluation). An invalid request is denied with one pass named
// "<invalid request>" carrying the problem.
func (e *Engine) Decide(req Request) Decision { return e.Set().decide(req, true) }

// policiesFor returns what Authorize evaluates for one principal: the index
// candidates, or (indexed=false, for the equivalence test) every enforced policy.
func (s *Set) policiesFor(ents types.EntityGetter, principal types.EntityUID, resKeys []types.EntityUID, indexed bool) cedar.PolicyIterator {
	if !indexed {
		return s.enforced
	}
	return s.index.candidates(scopeKeys(ents, principal), resKeys)
}

func (s *Set) decide(req Request, indexed bool) Decision {
	if err := validateRequest(&req, req.Action); err != nil {
		return invalidDecision(s, err)
	}
	b := buildEntities(&req, s.model.actions)
	parts := newContextParts(&req, b.principals, argsRecord(req.Args, s.model.args))
	action := actionUID(req.Action)
	resKeys := scopeKeys(b.entities, b.resource)
	eval := func(p types.EntityUID, ctx types.Value) (types.Decision, types.Diagnostic) {
		return cedar.Authorize(s.policiesFor(b.entities, p, resKeys, indexed), b.entities, cedar.Request{
			Principal: p, Action: action, Resource: b.resource, Context: ctx.(types.Record),
		})
	}
	passes, results, allowed := runPasses(b.principals, parts.record(nil), eval)
	d := Decision{Outcome: Deny, Passes: passes, Digest: s.digest}
	d.PolicyIDs = policyIDs(passes, results, allowed)
	if allowed {
		d.Outcome = Allow
		return d
	}
	d.DeniedBy = firstDenied(passes)
	if s.approvalCurable(passes, results) {
		hyp := &Approval{Granted: true, Approver: "", CallID: req.CallID}
		if _, _, ok := runPasses(b.principals, parts.record(hyp), eval); ok {
			d.Outcome = NeedsApproval
		}
	}
	return d
}

// Visible reports whether policy could allow this chain to use req.Target for
// SOME arguments; the broker uses it to filter tools/list (and resource and
// prompt lists). It asks the question of the action that uses the target
// (call_tool for a tool, read_resource for a resource, get_prompt for a prompt),
// whatever req.Action says, with context.args unknown: through cedar-go's
// experimental batch evaluation with args ignored, a forbid that tests args is
// dropped and a permit's condition on args is dropped. A deny that an approval
// would cure counts as visible. req.Args and req.Approval are not used.
func (e *Engine) Visible(req Request) bool {
	s := e.Set()
	action := ActionCallTool
	switch req.Target.Kind {
	case TargetResource:
		action = ActionReadResource
	case TargetPrompt:
		action = ActionGetPrompt
	}
	req.Approval = nil
	if validateRequest(&req, action) != nil {
		return false
	}
	b := buildEntities(&req, s.model.actions)
	parts := newContextParts(&req, b.principals, batch.Ignore())
	actUID := actionUID(action)
	resKeys := scopeKeys(b.entities, b.resource)
	eval := func(p types.EntityUID, ctx types.Value) (types.Decision, types.Diagnostic) {
		var res types.Decision
		var diag types.Diagnostic
		n := 0
		err := batch.Authorize(context.Background(), s.policiesFor(b.entities, p, resKeys, true), b.entities, batch.Request{
			Principal: p, Action: actUID, Resource: b.resource, Context: ctx,
		}, func(r batch.Result) error {
			n++
			res, diag = r.Decision, r.Diagnostic
			return nil
		})
		if err != nil || n != 1 {
			// Fail closed: an evaluation we cannot interpret is not an allow.
			msg := "batch evaluation did not produce exactly one result"
			if err != nil {
				msg = err.Error()
			}
			return cedar.Deny, types.Diagnostic{Errors: []types.DiagnosticError{{PolicyID: "", Message: msg}}}
		}
		return res, diag
	}
	passes, results, allowed := runPasses(b.principals, parts.record(nil), eval)
	if allowed {
		return true
	}
	if !s.approvalCurable(passes, results) {
		return false
	}
	hyp := &Approval{Granted: true, CallID: req.CallID}
	_, _, ok := runPasses(b.principals, parts.record(hyp), eval)
	return ok
}

func invalidDecision(s *Set, err error) Decision {
	return Decision{
		Outcome:  Deny,
		Passes:   []Pass{{Principal: invalidPrincipal, Errors: []string{"invalid request: " + err.Error()}}},
		Digest:   s.digest,
		DeniedBy: invalidPrincipal,
	}
}

func firstDenied(passes []Pass) string {
	for _, p := range passes {
		if !p.Allowed {
			return p.Principal
		}
	}
	return ""
}

// policyIDs collects the determining policy IDs in pass order, deduped: on
// allow the permits of every pass; on deny the forbids of every pass Cedar
// denied and the erroring policies of every pass that did not allow.
func policyIDs(passes []Pass, results []passResult, allowed bool) []string {
	var ids []string
	addID := func(id cedar.PolicyID) {
		if id != "" && !slices.Contains(ids, string(id)) {
			ids = append(ids, string(id))
		}
	}
	for i, r := range results {
		if allowed {
			for _, id := range r.reasons {
				addID(id)
			}
			continue
		}
		if passes[i].Allowed {
			continue
		}
		if !r.cedarAllow {
			for _, id := range r.reasons {
				addID(id)
			}
		}
		for _, id := range r.errors {
			addID(id)
		}
	}
	return ids
}
