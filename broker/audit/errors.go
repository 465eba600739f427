package audit

import (
	"errors"
	"fmt"
)

// ErrChainBroken is matched (errors.Is) by every *ChainError returned by
// Verify: the ledger was altered, truncated or reordered.
var ErrChainBroken = errors.New("audit ledger chain broken")

// ErrInvalidEvent is returned (wrapped) by Record and Event.Validate for an
// event outside the closed sets of types, decisions and statuses.
var ErrInvalidEvent = errors.New("invalid audit event")

// ChainError names the first ledger entry that fails verification.
type ChainError struct {
	Seq    uint64 // first bad sequence number
	Reason string // what is wrong with it
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("audit ledger broken at seq %d: %s", e.Seq, e.Reason)
}

// Is reports whether target is ErrChainBroken.
func (e *ChainError) Is(target error) bool { return target == ErrChainBroken }

// ErrNoSigner is returned (wrapped) by Ledger.Checkpoint on a Ledger built
// without WithSigner.
var ErrNoSigner = errors.New("no checkpoint signing key")

// ErrInvalidClass is returned (wrapped) by Class.Validate and
// Classes.Validate for a class other than public, sensitive or secret.
var ErrInvalidClass = errors.New("invalid argument class")
