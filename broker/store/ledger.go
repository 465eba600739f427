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

// AppendLedger appends one entry to the ledger in a group-committed
// transaction (group commit, commit.go): concurrent appends share one commit and fsync.
//
// build receives the new 1-based sequence number and the previous entry's
// hash (nil for the first entry) and returns the entry bytes and its hash;
// the hash is kept in the meta bucket so the next append need not read the
// previous entry. build may be called more than once (a batch that fails is
// retried) and runs inside the write transaction, so it must be pure and
// quick. Neither returned slice may be empty.
//
// AppendLedger returns the entry's sequence number once the transaction has
// committed. It returns an error if the entry was not written, or if ctx ended
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
	var seq uint64
	p, err := s.enqueue(func(tx *bolt.Tx) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if sp != nil {
			if err := spendTx(tx, sp.IDs, sp.Limits); err != nil {
				return err
			}
		}
		n, err := appendTx(tx, build)
		seq = n
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("append ledger: %w", err)
	}
	// The caller may stop waiting on a stuck fsync; the commit goes on
	// (Close waits for it).
	select {
	case err := <-p.done:
		if err != nil {
			return 0, fmt.Errorf("append ledger: %w", mapErr(err))
		}
		return seq, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("append ledger: commit not confirmed: %w", ctx.Err())
	}
}

func appendTx(tx *bolt.Tx, build func(uint64, []byte) ([]byte, []byte, error)) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	ledger := tx.Bucket(bucketLedger)
	if meta == nil || ledger == nil {
		return 0, fmt.Errorf("ledger buckets missing: %w", ErrSchema)
	}
	last, err := readSeq(meta.Get(metaLedgerSeq))
	if err != nil {
		return 0, err
	}
	seq := last + 1
	var prev []byte
	if h := meta.Get(metaLedgerHash); h != nil {
		prev = bytes.Clone(h) // bbolt memory is only valid inside the tx; build may keep it
	}
	if last > 0 && prev == nil {
		return 0, fmt.Errorf("ledger head hash missing at seq %d", last)
	}
	entry, hash, err := build(seq, prev)
	if err != nil {
		return 0, fmt.Errorf("build ledger entry %d: %w", seq, err)
	}
	if len(entry) == 0 || len(hash) == 0 {
		return 0, fmt.Errorf("build ledger entry %d: empty entry or hash", seq)
	}
	key := u64(seq)
	if ledger.Get(key) != nil {
		return 0, fmt.Errorf("ledger entry %d already exists", seq)
	}
	ledger.FillPercent = 1.0 // keys only ever grow: pack pages full
	if err := ledger.Put(key, entry); err != nil {
		return 0, err
	}
	if err := meta.Put(metaLedgerSeq, key); err != nil {
		return 0, err
	}
	if err := meta.Put(metaLedgerHash, hash); err != nil {
		return 0, err
	}
	return seq, nil
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
