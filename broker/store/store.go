package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout version written to the meta bucket by Open.
const SchemaVersion uint64 = 1

// DefaultLockTimeout is how long Open waits for the file lock when
// Options.LockTimeout is zero.
const DefaultLockTimeout = time.Second

// Bucket names. Each is created by Open.
var (
	bucketLedger    = []byte("ledger")
	bucketSessions  = []byte("sessions")
	bucketTasks     = []byte("tasks")
	bucketApprovals = []byte("approvals")
	bucketPins      = []byte("pins")
	bucketMeta      = []byte("meta")

	allBuckets = [][]byte{bucketLedger, bucketSessions, bucketTasks, bucketApprovals, bucketPins, bucketMeta}
)

// Keys in the meta bucket.
var (
	metaSchema     = []byte("schema_version") // 8-byte big-endian
	metaLedgerSeq  = []byte("ledger_seq")     // 8-byte big-endian, last appended sequence
	metaLedgerHash = []byte("ledger_hash")    // hash returned by build for ledger_seq
)

// Options configure Open. The zero value is a writable, fsync'ed store that
// waits DefaultLockTimeout for the file lock.
type Options struct {
	// LockTimeout bounds the wait for the file lock; zero or negative means
	// DefaultLockTimeout. Open never waits forever.
	LockTimeout time.Duration
	// ReadOnly opens the file with a shared lock and rejects writes with
	// ErrReadOnly. The file must already exist and be initialised.
	ReadOnly bool
	// NoSync skips fsync on commit. Only for tests and benchmarks: a crash
	// can then lose committed audit records.
	NoSync bool
}

// Store is an open bbolt file. It is safe for concurrent use. Close releases
// the file lock.
type Store struct {
	commits groupCommit
	db      *bolt.DB
	path    string
	closed  atomic.Bool
}

// Open opens or creates the store at path (mode 0600; the parent directory
// is created with mode 0700 if missing), creates any missing buckets and
// records the schema version. If another process holds the lock, Open
// returns an error wrapping ErrLocked after at most opts.LockTimeout.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:  timeout,
		ReadOnly: opts.ReadOnly,
		NoSync:   opts.NoSync,
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db, path: path}
	err = recoverCorrupt(func() error {
		if opts.ReadOnly {
			return db.View(checkSchema)
		}
		return db.Update(initSchema)
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := recoverCorrupt(func() error { return s.recoverWAL(opts) }); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

// recoverWAL applies what the write-ahead log holds beyond the file's
// ledger head (the broker stopped without closing the store), then starts
// the committer on an empty log. A read-only store cannot apply it, so it
// refuses to open rather than show a ledger without its newest entries.
func (s *Store) recoverWAL(opts Options) error {
	var head uint64
	var hash []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		n, err := readSeq(meta.Get(metaLedgerSeq))
		head, hash = n, bytes.Clone(meta.Get(metaLedgerHash))
		return err
	})
	if err != nil {
		return err
	}
	if head > 0 && len(hash) == 0 {
		return fmt.Errorf("ledger head hash missing at seq %d: %w", head, ErrCorrupt)
	}
	recs, err := readWAL(walPath(s.path), head)
	if err != nil {
		return err
	}
	if opts.ReadOnly {
		if len(recs) > 0 {
			return fmt.Errorf("%w: its write-ahead log holds %d audit records (seq %d to %d) not yet in the file; open the store writable once (start the broker, or run a command that writes) to apply them",
				ErrPendingLog, len(recs), recs[0].seq, recs[len(recs)-1].seq)
		}
		return nil
	}
	if len(recs) > 0 {
		if err := s.db.Update(func(tx *bolt.Tx) error { return applyRecs(tx, recs) }); err != nil {
			return fmt.Errorf("apply write-ahead log: %w", err)
		}
		head, hash = recs[len(recs)-1].seq, recs[len(recs)-1].hash
	}
	lg, err := openWAL(walPath(s.path), opts.NoSync)
	if err != nil {
		return err
	}
	s.startCommitter(lg, head, hash)
	return nil
}

func initSchema(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(metaSchema); v != nil {
		return checkVersion(v)
	}
	return meta.Put(metaSchema, u64(SchemaVersion))
}

func checkSchema(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("missing bucket %s: %w", name, ErrSchema)
		}
	}
	return checkVersion(tx.Bucket(bucketMeta).Get(metaSchema))
}

func checkVersion(v []byte) error {
	if len(v) != 8 {
		return fmt.Errorf("malformed schema version %x: %w", v, ErrSchema)
	}
	if got := binary.BigEndian.Uint64(v); got != SchemaVersion {
		return fmt.Errorf("schema version %d, want %d: %w", got, SchemaVersion, ErrSchema)
	}
	return nil
}

// Close waits for running transactions, then closes the file and releases
// the lock. Operations after Close return ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.stopCommitter() // commits what is queued, and checkpoints
	err := errors.Join(s.db.Close(), s.commits.log.close())
	if err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// Path returns the file path given to Open.
func (s *Store) Path() string { return s.path }

// Check runs bbolt's consistency check over the whole file and returns every
// problem found, joined. For tests and `audit verify`.
func (s *Store) Check() error {
	if s.closed.Load() {
		return fmt.Errorf("check store: %w", ErrClosed)
	}
	if err := s.flush(); err != nil {
		return fmt.Errorf("check store: %w", err)
	}
	return s.view("check store", func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// recoverCorrupt runs fn and turns a bbolt panic on a damaged page into an
// error wrapping ErrCorrupt.
func recoverCorrupt(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	return fn()
}

// view runs fn in a read transaction and maps bbolt's closed error.
//
// bbolt panics on a corrupt page; view turns that into an error wrapping
// ErrCorrupt, so `audit verify` on a damaged copy reports instead of
// crashing.
func (s *Store) view(op string, fn func(*bolt.Tx) error) (err error) {
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", op, ErrClosed)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: %w: %v", op, ErrCorrupt, r)
		}
	}()
	if err := s.db.View(fn); err != nil {
		return fmt.Errorf("%s: %w", op, mapErr(err))
	}
	return nil
}

// mapErr turns bbolt's errors into this package's sentinels where one fits,
// keeping the original in the chain.
func mapErr(err error) error {
	switch {
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, berrors.ErrDatabaseReadOnly), errors.Is(err, berrors.ErrTxNotWritable):
		return fmt.Errorf("%w: %w", ErrReadOnly, err)
	}
	return err
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}
