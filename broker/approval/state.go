package approval

import "fmt"

// State is where an approval is in its life. A closed set.
type State string

const (
	Requested State = "requested" // waiting for a human
	Approved  State = "approved"  // a human said yes; not yet used (or a scoped grant still live)
	Denied    State = "denied"    // a human said no
	Expired   State = "expired"   // nobody decided in time, or a scoped grant ran out
	Cancelled State = "cancelled" // the call went away or the prompt was dismissed
	Consumed  State = "consumed"  // a once-scoped approval was used by its call
)

// Validate reports whether s is a known state.
func (s State) Validate() error {
	switch s {
	case Requested, Approved, Denied, Expired, Cancelled, Consumed:
		return nil
	}
	return fmt.Errorf("approval state %q: %w", string(s), ErrInvalidTransition)
}

// Final reports whether nothing can happen to an approval in s any more.
func (s State) Final() bool {
	return s == Denied || s == Expired || s == Cancelled || s == Consumed
}

// next lists the allowed transitions. approved → approved is one use of a
// session- or task-scoped grant (the record stays approved until it
// expires); approved → expired ends such a grant.
var next = map[State][]State{
	Requested: {Approved, Denied, Expired, Cancelled},
	Approved:  {Consumed, Approved, Expired},
}

// CanMove reports whether from → to is allowed.
func CanMove(from, to State) bool {
	for _, s := range next[from] {
		if s == to {
			return true
		}
	}
	return false
}
