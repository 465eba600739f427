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
}
