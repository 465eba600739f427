package store

import "errors"

// ErrLocked is returned (wrapped) by Open when another process holds the
// file lock for longer than Options.LockTimeout, typically a running broker.
var ErrLocked = errors.New("store is locked by another process")

// ErrClosed is returned (wrapped) by any operation on a Store after Close.
var ErrClosed = errors.New("store is closed")

// ErrReadOnly is returned (wrapped) by writes to a Store opened with
// Options.ReadOnly.
var ErrReadOnly = errors.New("store is read-only")

// ErrSchema is returned (wrapped) by Open when the file carries a schema
// version this binary does not understand, or a read-only file was never
// initialised.
var ErrSchema = errors.New("unsupported store schema")

// ErrCorrupt is returned (wrapped) by reads that hit a damaged page: the
// file was edited or truncated outside bbolt.
var ErrCorrupt = errors.New("store file is corrupt")

// ErrPendingLog is returned (wrapped) by a read-only Open when the store's
// write-ahead log holds ledger entries not yet applied to the file (its
// writer stopped without closing it): a writable Open applies them.
var ErrPendingLog = errors.New("store has unapplied write-ahead log records")
