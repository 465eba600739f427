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
