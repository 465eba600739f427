// Package agents knows who is calling and on whose behalf: it turns a
// transport credential into an Identity (agent SPIFFE ID, initiator,
// tenant), carries it in a request context, and binds MCP transport sessions
// to the identity that opened them so that a session ID is never a
// credential.
//
// It sits right behind the face in the call path. It never decides whether a
// call is allowed (that is policies) and never talks to downstream servers.
package agents
