package policies

import (
	"github.com/cedar-policy/cedar-go"
)

// Explanation is a decision taken apart for a human: every pass, the policies
// that determined it with their source positions, the evaluation errors, and
// whether an approval would cure a deny. It may hold policy IDs, positions and
// evaluation messages; it never holds policy text.
type Explanation struct {
	Outcome  Outcome           `json:"outcome"`
	Digest   string            `json:"digest"`
	DeniedBy string            `json:"denied_by,omitempty"`
	Invalid  string            `json:"invalid,omitempty"` // why the request itself was refused
	Passes   []PassExplanation `json:"passes"`
	// ApprovalCures is true when the outcome is NeedsApproval: a human
	// approval of this very call would allow it.
	ApprovalCures bool `json:"approval_cures"`
	// ApprovalNote says why an approval would or would not help ("" on allow).
	ApprovalNote string `json:"approval_note,omitempty"`

	ShadowOutcome Outcome            `json:"shadow_outcome,omitempty"`
	Shadow        []ShadowResult     `json:"shadow,omitempty"`
	Candidate     *CandidateDecision `json:"candidate,omitempty"`
}

// PassExplanation is one principal's evaluation.
type PassExplanation struct {
	Principal string `json:"principal"`
	Allowed   bool   `json:"allowed"` // Cedar allowed and no policy errored
	Cedar     string `json:"cedar"`   // Cedar's own answer, "allow" or "deny"
	// Evaluated is how many enforced policies the index handed to Cedar.
	Evaluated int `json:"evaluated"`
	// Determining are the satisfied permits (Cedar allowed) or forbids (Cedar
	// denied); empty on a deny means no policy permits this (default deny).
	Determining []PolicyInfo  `json:"determining"`
	Errors      []PolicyError `json:"errors,omitempty"`
}

// PolicyError is one policy that failed to evaluate; it makes its pass deny.
type PolicyError struct {
	PolicyInfo
	Message string `json:"message"`
}

// Explain decides req like Decide and explains the result. It is slower than
// Decide and meant for operators (the CLI, an admin endpoint), not for the
// call path.
func (e *Engine) Explain(req Request) Explanation {
	x := e.Set().explain(req)
	if c := e.Candidate(); c != nil {
		cd := c.decide(req, true)
		x.Candidate = &CandidateDecision{Outcome: cd.Outcome, PolicyIDs: cd.PolicyIDs, Digest: cd.Digest, DeniedBy: cd.DeniedBy}
	}
	return x
}

func (s *Set) info1(id cedar.PolicyID) PolicyInfo {
	if i, ok := s.info[id]; ok {
		return i
	}
	return PolicyInfo{ID: string(id)}
}

func (s *Set) explain(req Request) Explanation {
	p, err := s.prepare(req)
	if err != nil {
		return Explanation{Outcome: Deny, Digest: s.digest, DeniedBy: invalidPrincipal,
			Invalid: err.Error(), ApprovalNote: "the request is invalid; nothing can cure it",
			Passes: []PassExplanation{}}
	}
	d, results := s.evaluate(p, viewIndexed)
	x := Explanation{Outcome: d.Outcome, Digest: d.Digest, DeniedBy: d.DeniedBy, ApprovalCures: d.Outcome == NeedsApproval}
	for i, r := range results {
		pe := PassExplanation{Principal: d.Passes[i].Principal, Allowed: d.Passes[i].Allowed, Cedar: "deny", Determining: []PolicyInfo{}}
		if r.cedarAllow {
			pe.Cedar = "allow"
		}
		for range s.policiesFor(p, i, viewIndexed).All() {
			pe.Evaluated++
		}
		for _, id := range r.reasons {
			pe.Determining = append(pe.Determining, s.info1(id))
		}
		for _, e := range r.errors {
			pe.Errors = append(pe.Errors, PolicyError{PolicyInfo: s.info1(e.PolicyID), Message: e.Message})
		}
		x.Passes = append(x.Passes, pe)
	}
	switch {
	case d.Outcome == Allow:
	case d.Outcome == NeedsApproval:
		x.ApprovalNote = "every determining forbid carries @approval and an approval of this call would allow it"
	default:
		if why := s.whyNotCurable(d.Passes, results); why != "" {
			x.ApprovalNote = "an approval would not help: " + why
		} else {
			x.ApprovalNote = "an approval would not help: the @approval forbids would be lifted, but some pass still would not allow"
		}
	}
	if s.shadowApplies(p) {
		sd, sr := s.evaluate(p, viewShadow)
		x.ShadowOutcome = sd.Outcome
		x.Shadow = s.shadowResults(sd.Passes, sr)
	}
	return x
}
