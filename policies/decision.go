package policies

import "fmt"

// Outcome is the broker-level result of a decision. A closed set.
type Outcome string

const (
	Allow         Outcome = "allow"
	Deny          Outcome = "deny"
	NeedsApproval Outcome = "needs_approval"
)

// Validate reports whether o is a known outcome.
func (o Outcome) Validate() error {
	switch o {
	case Allow, Deny, NeedsApproval:
		return nil
	}
	return fmt.Errorf("unknown outcome %q", string(o))
}

// Pass is the result of one cedar.Authorize, for one principal of the chain.
type Pass struct {
	Principal string   // e.g. `Broker::User::"alice"`
	Allowed   bool     // Cedar allowed and no policy errored
	Reasons   []string // determining policy IDs (satisfied permits on allow, satisfied forbids on deny)
	Errors    []string // evaluation errors; any error makes the pass deny
}

// Decision is the answer for one Request. It is safe to keep and log: it holds
// policy IDs and evaluation messages, never policy text.
type Decision struct {
	Outcome Outcome
	Passes  []Pass
	// PolicyIDs are the determining policy IDs, deduped, in pass order: on Allow
	// the permits of every pass; otherwise the forbids of the passes that did
	// not allow and the IDs of the policies that errored there.
	PolicyIDs []string
	Digest    string // digest of the Set used
	DeniedBy  string // principal of the first pass that did not allow; "" on allow

	// The fields below are never enforced: they say what policies that are
	// being rolled out would have done to this request.

	// ShadowOutcome is the outcome had the Set's @mode("log_only") policies been
	// enforced; "" when none of them could apply to this request (then Shadow is
	// empty too).
	ShadowOutcome Outcome
	// Shadow lists the log_only policies that determined a pass (or errored in
	// one) when evaluated together with the enforced policies, in pass order.
	Shadow []ShadowResult
	// Candidate is what the engine's candidate Set decided (Engine.SetCandidate);
	// nil when there is none.
	Candidate *CandidateDecision
}

// ShadowEffect is the would-be effect of a log_only policy. A closed set.
type ShadowEffect string

const (
	ShadowDeny  ShadowEffect = "shadow_deny"  // a log_only forbid was satisfied
	ShadowAllow ShadowEffect = "shadow_allow" // a log_only permit was satisfied and no forbid
	ShadowError ShadowEffect = "shadow_error" // a log_only policy failed to evaluate (would deny)
)

// Validate reports whether e is a known shadow effect.
func (e ShadowEffect) Validate() error {
	switch e {
	case ShadowDeny, ShadowAllow, ShadowError:
		return nil
	}
	return fmt.Errorf("unknown shadow effect %q", string(e))
}

// ShadowResult is one log_only policy's would-be effect in one pass.
type ShadowResult struct {
	Principal string       // the pass, as in Pass.Principal
	PolicyID  string       //
	Effect    ShadowEffect //
	Error     string       // evaluation error for ShadowError
}

// CandidateDecision is the candidate Set's answer to the same request. It
// never affects the enforced Decision.
type CandidateDecision struct {
	Outcome   Outcome
	PolicyIDs []string
	Digest    string // the candidate Set's digest
	DeniedBy  string
}
