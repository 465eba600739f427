package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// metaLedgerBase holds the opaque base record written by CompactLedger: what
// the first remaining entry follows. Store never interprets it.
var metaLedgerBase = []byte("ledger_base")

// compactChunk is how many entries one CompactLedger transaction deletes, so
// compaction never holds the write lock long enough to stall audit records.
var compactChunk = 4096 // a var so the test can exercise chunking

// CompactLedger deletes the ledger entries with sequence numbers 1..upto and
// records base (for example a signed checkpoint of entry upto) as the ledger
// base, which LedgerBase returns. The base is written in the first
// transaction, before any entry is deleted, so a crash mid-way leaves a
// ledger whose first entries are already covered by the base; a rerun
// finishes the job. upto must be below the ledger head: the head entry is
// never removed, so appends keep chaining from it.
//
// It returns the number of entries deleted.
func (s *Store) CompactLedger(ctx context.Context, upto uint64, base []byte) (int, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("compact ledger: %w", ErrClosed)
	}
	if len(base) == 0 {
		return 0, fmt.Errorf("compact ledger: empty base")
	}
	if err := s.flush(); err != nil {
		return 0, fmt.Errorf("compact ledger: %w", err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("meta bucket missing: %w", ErrSchema)
		}
		head, err := readSeq(meta.Get(metaLedgerSeq))
		if err != nil {
			return err
		}
		if upto >= head {
			return fmt.Errorf("compact up to seq %d: ledger head is %d and is always kept", upto, head)
		}
		return meta.Put(metaLedgerBase, base)
	})
	if err != nil {
		return 0, fmt.Errorf("compact ledger: %w", mapErr(err))
	}
	deleted := 0
	for {
		if err := ctx.Err(); err != nil {
			return deleted, fmt.Errorf("compact ledger: %w", err)
		}
		n := 0
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketLedger)
			var keys [][]byte
			c := b.Cursor()
			for k, _ := c.First(); k != nil && len(keys) < compactChunk; k, _ = c.Next() {
				if len(k) != 8 || binary.BigEndian.Uint64(k) > upto {
					break
				}
				keys = append(keys, bytes.Clone(k))
			}
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			n = len(keys)
			return nil
		})
		if err != nil {
			return deleted, fmt.Errorf("compact ledger: %w", mapErr(err))
		}
		deleted += n
		if n < compactChunk {
			return deleted, nil
		}
	}
}

// LedgerBase returns the base record written by the last CompactLedger, or
// nil if the ledger was never compacted.
func (s *Store) LedgerBase() ([]byte, error) {
	var base []byte
	err := s.view("ledger base", func(tx *bolt.Tx) error {
		base = bytes.Clone(tx.Bucket(bucketMeta).Get(metaLedgerBase))
		return nil
	})
	return base, err
}

// Size returns the size in bytes of the store file as bbolt sees it (the
// high-water mark of its pages), for metrics.
func (s *Store) Size() (int64, error) {
	var n int64
	err := s.view("store size", func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n, err
}

// metaProbe is rewritten by Probe.
var metaProbe = []byte("probe")

// Probe commits a tiny write transaction (with fsync) through the
// committer and reports whether the store is writable: for readiness checks
// after a failed append, so the broker can report healthy again once space
// returns. It fails while the write-ahead log refuses appends.
func (s *Store) Probe(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("probe store: %w", ErrClosed)
	}
	p := &pendingWrite{probe: true, done: make(chan error, 1), fn: func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaProbe, []byte{1})
	}}
	if err := s.enqueue(p); err != nil {
		return fmt.Errorf("probe store: %w", err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			return fmt.Errorf("probe store: %w", mapErr(err))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("probe store: %w", ctx.Err())
	}
}
