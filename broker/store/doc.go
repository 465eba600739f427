// Package store is the broker's durable state: one bbolt file in the data
// directory holding the audit ledger, sessions, tasks, approvals, tool pins
// and a meta bucket with the schema version.
//
// It sits at the end of the call path: the pipeline's record stage (package
// audit) appends ledger entries here before a call is forwarded and before
// its response goes back. Store never interprets what it stores: it does not
// decode ledger entries, compute hashes or make decisions. It is the only
// package in the repository that imports bbolt.
//
// bbolt admits one process at a time through an exclusive file lock. Open
// never waits longer than Options.LockTimeout for that lock; a held lock is
// reported as ErrLocked so a CLI can fall back to the running broker's admin
// socket.
package store
