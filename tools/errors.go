package tools

import "errors"

// ErrUnavailable means the downstream server is not connected (down at
// start-up, crashed, or restarting).
var ErrUnavailable = errors.New("downstream server unavailable")

// ErrUnknownTarget means no downstream offers the named tool, prompt or
// resource.
var ErrUnknownTarget = errors.New("unknown tool, prompt or resource")

// ErrCollision means two downstream servers expose the same name.
var ErrCollision = errors.New("name collision between downstream servers")

// ErrNoCaller means a downstream server sent a request (elicitation,
// sampling, roots) that cannot be tied to the agent call it belongs to.
var ErrNoCaller = errors.New("no agent call to relay the request to")

// ErrBadArguments means tool arguments are not a JSON object, or not one
// the broker can read the same way as every downstream.
var ErrBadArguments = errors.New("malformed tool arguments")

// ErrAnswerTooLarge means a downstream's answer to a request (a JSON body,
// or all of the SSE stream that carries it) exceeded the pool's limit
// (Options.MaxAnswerBytes).
var ErrAnswerTooLarge = errors.New("downstream answer over the size limit")
