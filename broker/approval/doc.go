// Package approval is the human-approval stage of the broker's flow
// (face → identity → session/task → policy → approval → forward → record):
// it keeps approval records, runs their state machine
// (requested → approved | denied | expired | cancelled → consumed), checks
// who may decide (separation of duties), binds approvals to a digest of the
// exact call and to a scope, seals the MRTR requestState of an in-band
// prompt, and signs webhook notifications.
//
// Records are append-only: a record's request part is written once, and
// every change is a new Transition with the next sequence number; the
// current state is the fold of the transitions. Time comes from an
// injected clock.
//
// The package never talks MCP, never evaluates policy and never writes the
// audit ledger: the broker's pipeline drives it and records what it says
// (Options.OnTransition).
package approval
