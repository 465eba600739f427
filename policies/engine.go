package policies

import (
	"slices"
	"strings"
	"sync/atomic"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
)

// Engine decides requests against the current Set. It is safe for concurrent
// use; Swap replaces the Set atomically, and each decision uses exactly one Set
// (the one whose digest it reports). An engine may also hold a candidate Set
// (SetCandidate): it is evaluated next to the live one and reported in
// Decision.Candidate, never enforced.
type Engine struct {
	set       atomic.Pointer[Set]
	candidate atomic.Pointer[Set]
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

// SetCandidate makes set the candidate Set (policy.mode: log_only for a whole
// set): every later Decide also evaluates it and reports its result in
// Decision.Candidate, without enforcing it. nil removes the candidate.
func (e *Engine) SetCandidate(set *Set) { e.candidate.Store(set) }

// Candidate returns the candidate Set, nil if there is none.
func (e *Engine) Candidate() *Set { return e.candidate.Load() }

// invalidPrincipal names the single pass of a request that failed validation.
const invalidPrincipal = "<invalid request>"

// passResult is one pass with what the outcome logic needs beyond Pass.
type passResult struct {
	cedarAllow bool
	reasons    []cedar.PolicyID
	errors     []types.DiagnosticError // sorted by PolicyID, then message
}

func (r passResult) errorIDs() []cedar.PolicyID {
	ids := make([]cedar.PolicyID, len(r.errors))
	for i, e := range r.errors {
		ids[i] = e.PolicyID
	}
	return ids
}

// evalFunc evaluates the principal at index i of the chain with the given context.
type evalFunc func(i int, principal types.EntityUID, ctx types.Value) (types.Decision, types.Diagnostic)

// runPasses evaluates every principal in order (all of them: the audit record
// wants each hop) and reports whether all allowed. names[i] is
// principals[i].String().
func runPasses(principals []types.EntityUID, names []string, ctx types.Value, eval evalFunc) ([]Pass, []passResult, bool) {
	passes := make([]Pass, len(principals))
	results := make([]passResult, len(principals))
	all := true
	for i, p := range principals {
		dec, diag := eval(i, p, ctx)
		pass := Pass{Principal: names[i], Allowed: dec == cedar.Allow && len(diag.Errors) == 0}
		res := passResult{cedarAllow: dec == cedar.Allow}
		for _, r := range diag.Reasons {
			pass.Reasons = append(pass.Reasons, string(r.PolicyID))
			res.reasons = append(res.reasons, r.PolicyID)
		}
		for _, e := range diag.Errors {
			pass.Errors = append(pass.Errors, e.String())
			res.errors = append(res.errors, e)
		}
		// Cedar reports in policy iteration order; sort for stable output.
		slices.Sort(pass.Reasons)
		slices.Sort(pass.Errors)
		slices.Sort(res.reasons)
		slices.SortFunc(res.errors, func(a, b types.DiagnosticError) int {
			if c := strings.Compare(string(a.PolicyID), string(b.PolicyID)); c != 0 {
				return c
			}
			return strings.Compare(a.Message, b.Message)
		})
		passes[i], results[i] = pass, res
		all = all && pass.Allowed
	}
	return passes, results, all
}

// approvalCurable reports whether a deny could be cured by an approval: no pass
// errored, and every denying pass was denied by forbids that all carry @approval.
func (s *Set) approvalCurable(passes []Pass, results []passResult) bool {
	return s.whyNotCurable(passes, results) == ""
}

// whyNotCurable returns "" if an approval could cure the deny (see
// approvalCurable), otherwise why not.
func (s *Set) whyNotCurable(passes []Pass, results []passResult) string {
	for i, r := range results {
		if len(r.errors) > 0 {
			return passes[i].Principal + ": evaluation errors deny whatever a human decides"
		}
		if passes[i].Allowed {
			continue
		}
		if r.cedarAllow || len(r.reasons) == 0 {
			return passes[i].Principal + ": no policy permits this"
		}
		for _, id := range r.reasons {
			if !s.approval[id] {
				return passes[i].Principal + ": forbidden by " + string(id) + ", which has no @approval"
			}
		}
	}
	return ""
}

// Decide evaluates req once per principal (initiator first, then each agent of
// the chain in order) and combines the passes: Allow only if every pass allowed
// with no evaluation error. A deny that only @approval forbids caused, and that
// a hypothetical approval for this CallID would turn into an allow in every
// pass, is NeedsApproval (Passes and PolicyIDs then describe the real
// evaluation). An invalid request is denied with one pass named
// "<invalid request>" carrying the problem.
//
// Decide also fills the fields that are never enforced: Shadow and
// ShadowOutcome (the Set's @mode("log_only") policies) and Candidate (the
// candidate Set, if any).
func (e *Engine) Decide(req Request) Decision {
	d := e.Set().decide(req, true)
	if c := e.Candidate(); c != nil {
		cd := c.decide(req, true)
		d.Candidate = &CandidateDecision{Outcome: cd.Outcome, PolicyIDs: cd.PolicyIDs, Digest: cd.Digest, DeniedBy: cd.DeniedBy}
	}
	return d
}

// prepared is a request turned into Cedar inputs, shared by every evaluation
// of it (live, shadow, hypothetical approval, explanation). st is shared with
// other requests (the Set's cache) and never written.
type prepared struct {
	callID string
	st     *reqStatic
	b      built
	parts  contextParts
	action types.EntityUID
}

func (s *Set) prepare(req Request) (*prepared, error) {
	if err := validateRequest(&req, req.Action); err != nil {
		return nil, err
	}
	st := s.static(&req)
	return &prepared{
		callID: req.CallID,
		st:     st,
		b:      built{principals: st.principals, resource: st.resource, entities: overlay{req: st.ents, base: s.model.actions}},
		parts:  newContextParts(&req, st.chain, s.taskValue(req.Task), argsRecord(req.Args, s.model.args)),
		action: actionUID(req.Action),
	}, nil
}

// policyView says which policies an evaluation sees.
type policyView uint8

const (
	viewIndexed   policyView = iota // enforced policies through the index (production)
	viewUnindexed                   // every enforced policy (equivalence test)
	viewShadow                      // enforced + log_only, through the indexes
)

func (s *Set) policiesFor(p *prepared, i int, view policyView) cedar.PolicyIterator {
	switch view {
	case viewUnindexed:
		return s.enforced
	case viewShadow:
		return p.st.shadowCands[i]
	}
	return p.st.cands[i]
}

// evaluate runs every pass in view and, on a curable deny, the hypothetical
// approval. It fills Outcome, Passes, PolicyIDs, Digest and DeniedBy.
func (s *Set) evaluate(p *prepared, view policyView) (Decision, []passResult) {
	eval := func(i int, pr types.EntityUID, ctx types.Value) (types.Decision, types.Diagnostic) {
		return cedar.Authorize(s.policiesFor(p, i, view), p.b.entities, cedar.Request{
			Principal: pr, Action: p.action, Resource: p.b.resource, Context: ctx.(types.Record),
		})
	}
	passes, results, allowed := runPasses(p.b.principals, p.st.names, p.parts.record(nil), eval)
	d := Decision{Outcome: Deny, Passes: passes, Digest: s.digest}
	d.PolicyIDs = policyIDs(passes, results, allowed)
	if allowed {
		d.Outcome = Allow
		return d, results
	}
	d.DeniedBy = firstDenied(passes)
	if s.approvalCurable(passes, results) {
		hyp := &Approval{Granted: true, Approver: "", CallID: p.callID}
		if _, _, ok := runPasses(p.b.principals, p.st.names, p.parts.record(hyp), eval); ok {
			d.Outcome = NeedsApproval
		}
	}
	return d, results
}

// shadowApplies reports whether any log_only policy could match a pass of p.
func (s *Set) shadowApplies(p *prepared) bool {
	return p.st.shadowApplies
}

// shadowResults lists the log_only policies that determined or errored in the
// passes of a shadow evaluation.
func (s *Set) shadowResults(passes []Pass, results []passResult) []ShadowResult {
	var out []ShadowResult
	for i, r := range results {
		for _, id := range r.reasons {
			if _, ok := s.logOnly[id]; !ok {
				continue
			}
			eff := ShadowAllow
			if s.logOnly[id].Effect() == cedar.Forbid {
				eff = ShadowDeny
			}
			out = append(out, ShadowResult{Principal: passes[i].Principal, PolicyID: string(id), Effect: eff})
		}
		for _, e := range r.errors {
			if _, ok := s.logOnly[e.PolicyID]; ok {
				out = append(out, ShadowResult{Principal: passes[i].Principal, PolicyID: string(e.PolicyID), Effect: ShadowError, Error: e.String()})
			}
		}
	}
	return out
}

func (s *Set) decide(req Request, indexed bool) Decision {
	p, err := s.prepare(req)
	if err != nil {
		return invalidDecision(s, err)
	}
	view := viewIndexed
	if !indexed {
		view = viewUnindexed
	}
	d, _ := s.evaluate(p, view)
	if s.shadowApplies(p) {
		sd, sr := s.evaluate(p, viewShadow)
		d.ShadowOutcome = sd.Outcome
		d.Shadow = s.shadowResults(sd.Passes, sr)
	}
	return d
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
		for _, id := range r.errorIDs() {
			addID(id)
		}
	}
	return ids
}
