package approval

import "errors"

// ErrUnknown means no approval record has the given ID.
var ErrUnknown = errors.New("unknown approval")

// ErrNotPending means the approval was already decided, expired or
// cancelled: a second decision (a replay) is refused.
var ErrNotPending = errors.New("approval is not pending")

// ErrExpired means the decision came after the approval's deadline; the
// record is expired by the attempt.
var ErrExpired = errors.New("approval has expired")

// ErrSeparation means the approver may not decide this approval: they are
// the initiator or an agent on the chain (out of band), or not the
// initiator (in band).
var ErrSeparation = errors.New("separation of duties: this approver may not decide this approval")

// ErrNotInGroup means the policy names an approver group the approver is
// not in.
var ErrNotInGroup = errors.New("approver is not in the group the policy names")

// ErrWrongChannel means the decision came through a channel the approval
// was not asked on (an in-band prompt is answered only in band).
var ErrWrongChannel = errors.New("approval cannot be decided through this channel")

// ErrNotCovered means an approval does not cover the call presented: other
// arguments, another session or task, already consumed, or not approved.
var ErrNotCovered = errors.New("approval does not cover this call")

// ErrInvalidTransition means the state machine does not allow the change.
var ErrInvalidTransition = errors.New("invalid approval state transition")

// ErrConflict means another writer appended a transition first (the
// sequence number is taken); re-read and retry.
var ErrConflict = errors.New("approval record changed concurrently")

// ErrInvalidRecord means a record is missing required fields.
var ErrInvalidRecord = errors.New("invalid approval record")

// ErrStateInvalid means a sealed requestState failed to open: forged,
// altered, malformed, or bound to another identity.
var ErrStateInvalid = errors.New("approval requestState is not valid")

// ErrStateExpired means a sealed requestState is past its expiry.
var ErrStateExpired = errors.New("approval requestState has expired")
