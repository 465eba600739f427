// Package audit is the record stage of the call path: it writes the broker's
// append-only, hash-chained audit ledger and reads it back.
//
// The pipeline calls Ledger.Record twice per brokered call: a call.decided
// event before the call is forwarded and a call.completed event before the
// response goes back. Record returns an error whenever the entry was not
// durably committed, and the caller then denies the call (fail closed).
// Records are written on a context detached from the caller's, so an agent
// that hangs up cannot erase its own record.
//
// audit never decides anything, never calls back into the pipeline, and never
// stores secrets or raw argument values: arguments appear only as keyed
// digests (Hasher). It reaches bbolt only through package store.
//
// # Chain format
//
// Each ledger value is the JSON object {"seq":N,"prev":P,"hash":H,"event":E}
// where E is the canonical JSON of the Event (see Canonical), P is the
// lower-case hex hash of entry N-1 ("" for N = 1) and H is
//
//	hex(SHA-256("mcpbroker.audit.v1\n" + decimal(N) + "\n" + P + "\n" + E))
//
// Verify recomputes every hash from E, N and P and checks the head kept by
// the store, so an offline verifier needs only this comment and Canonical.
package audit
