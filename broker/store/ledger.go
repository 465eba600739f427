package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// scanChunk is how many entries ScanLedger copies per read transaction. A
// long read transaction blocks bbolt's remap and so stalls writers; chunking
// keeps a slow reader from delaying audit records.
const scanChunk = 256

// AppendLedger appends one entry to the ledger, group-committed to the
// write-ahead log (commit.go, wal.go): concurrent appends share one write
// and fdatasync.
//
// build receives the new 1-based sequence number and the previous entry's
// hash (nil for the first entry) and returns the entry bytes and its hash;
// the hash is kept in the meta bucket so the next append need not read the
// previous entry. build runs on the committer goroutine, serialized with
// every other append, so it must be pure and quick; it must not keep or
// change prevHash. Neither returned slice may be empty, and the store owns
// both once build returns.
//
// AppendLedger returns the entry's sequence number once its group is
// durable in the log. It returns an error if the entry was not written, or if ctx ended
// while the commit was still in flight, in which case the entry may or may not
// have been written; either way the caller must treat the append as failed.
// An entry is never written once ctx has ended before its transaction ran.
func (s *Store) AppendLedger(ctx context.Context, build func(seq uint64, prevHash []byte) (entry, hash []byte, err error)) (uint64, error) {
	return s.appendLedger(ctx, build, nil)
}

// Spend is a call-budget charge: one call on each task in IDs, none past
// its limit (Limits[i] <= 0: no limit).
type Spend struct {
	IDs    []string
	Limits []int64
}

// AppendLedgerSpending is AppendLedger that charges sp in the same
// transaction: the entry (an allow decision) is committed only if the
// budget had room, and the budget is spent only if the entry is committed.
// A spent budget fails with an error wrapping agents.ErrBudget.
func (s *Store) AppendLedgerSpending(ctx context.Context, build func(seq uint64, prevHash []byte) (entry, hash []byte, err error), sp Spend) (uint64, error) {
	return s.appendLedger(ctx, build, &sp)
}

func (s *Store) appendLedger(ctx context.Context, build func(seq uint64, prevHash []byte) (entry, hash []byte, err error), sp *Spend) (uint64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("append ledger: %w", ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("append ledger: %w", err)
	}
	op := &ledgerOp{ctx: ctx, build: build, spend: sp}
	p := &pendingWrite{led: op, done: make(chan error, 1)}
	if err := s.enqueue(p); err != nil {
		return 0, fmt.Errorf("append ledger: %w", err)
	}
	// The caller may stop waiting on a stuck fsync; the commit goes on
	// (Close waits for it).
	select {
	case err := <-p.done:
		if err != nil {
			return 0, fmt.Errorf("append ledger: %w", mapErr(err))
		}
		return op.seq, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("append ledger: commit not confirmed: %w", ctx.Err())
	}
}

func readSeq(v []byte) (uint64, error) {
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("malformed ledger sequence %x", v)
	}
	return binary.BigEndian.Uint64(v), nil
}

// ScanLedger calls fn for every entry with seq >= from in ascending order,
// until fn returns an error, which ScanLedger returns. fn owns the entry
// slice. fn runs outside any transaction, so a slow fn does not hold up
// writers; entries appended during the scan may or may not be visited.
func (s *Store) ScanLedger(from uint64, fn func(seq uint64, entry []byte) error) error {
	if from == 0 {
		from = 1
	}
	type kv struct {
		seq   uint64
		entry []byte
	}
	if err := s.flush(); err != nil {
		return fmt.Errorf("scan ledger: %w", err)
	}
	chunk := make([]kv, 0, scanChunk)
	for {
		chunk = chunk[:0]
		err := s.view("scan ledger", func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketLedger)
			if b == nil {
				return fmt.Errorf("ledger bucket missing: %w", ErrSchema)
			}
			c := b.Cursor()
			for k, v := c.Seek(u64(from)); k != nil && len(chunk) < scanChunk; k, v = c.Next() {
				if len(k) != 8 {
					return fmt.Errorf("malformed ledger key %x", k)
				}
				chunk = append(chunk, kv{binary.BigEndian.Uint64(k), bytes.Clone(v)})
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, e := range chunk {
			if err := fn(e.seq, e.entry); err != nil {
				return err
			}
		}
		if len(chunk) < scanChunk {
			return nil
		}
		from = chunk[len(chunk)-1].seq + 1
	}
}

// LedgerLen returns the sequence number of the last appended entry, which is
// the number of entries (sequences start at 1 and have no gaps).
func (s *Store) LedgerLen() (uint64, error) {
	n, _, err := s.LedgerHead()
	return n, err
}

// LedgerHead returns the last appended sequence number and the hash recorded
// with it (nil for an empty ledger), as kept in the meta bucket. A verifier
// compares it with the last entry to detect a truncated ledger.
func (s *Store) LedgerHead() (seq uint64, hash []byte, err error) {
	if err := s.flush(); err != nil {
		return 0, nil, fmt.Errorf("ledger head: %w", err)
	}
	err = s.view("ledger head", func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("meta bucket missing: %w", ErrSchema)
		}
		n, err := readSeq(meta.Get(metaLedgerSeq))
		if err != nil {
			return err
		}
		seq = n
		hash = bytes.Clone(meta.Get(metaLedgerHash))
		return nil
	})
	return seq, hash, err
}
