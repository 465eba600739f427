package agents

import "errors"

// ErrUnauthenticated means the request carried no credential and no default
// identity is configured.
var ErrUnauthenticated = errors.New("no credential presented")

// ErrInvalidToken means the request carried a credential the broker does not
// accept.
var ErrInvalidToken = errors.New("credential not accepted")

// ErrSessionMismatch means a session ID was presented under another identity
// than the one that opened it.
var ErrSessionMismatch = errors.New("session belongs to another identity")

// ErrUnknownSession means a session ID the broker never issued, or one that
// has ended.
var ErrUnknownSession = errors.New("unknown or ended session")

// ErrOutsideTask means the request is outside the session's task boundary.
var ErrOutsideTask = errors.New("outside the task")

// ErrTaskEnded means the task (or an ancestor) was revoked or has expired.
var ErrTaskEnded = errors.New("task ended")

// ErrUnknownTask means no task matches the presented handle or ID.
var ErrUnknownTask = errors.New("unknown task")

// ErrBudget means the task's (or an ancestor's) call budget is spent.
var ErrBudget = errors.New("call budget spent")

// ErrChainToken means a chain token was refused (forged, expired, for
// another agent, or its parent call has ended).
var ErrChainToken = errors.New("chain token refused")
