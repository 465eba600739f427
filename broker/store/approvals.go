package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/mcpbroker/mcpbroker/broker/approval"
)

// Keys in the approvals bucket: r/<id> holds a record's request part as
// JSON (written once), t/<id>/<seq> (seq 8-byte big-endian) each appended
// transition. Nothing is ever overwritten or deleted.

var _ approval.Store = (*Store)(nil)

func approvalKey(id string) []byte { return []byte("r/" + id) }

func transitionPrefix(id string) []byte { return []byte("t/" + id + "/") }

func transitionKey(id string, seq int) []byte {
	return binary.BigEndian.AppendUint64(transitionPrefix(id), uint64(seq))
}

// CreateApproval writes a new approval record and its first transition.
func (s *Store) CreateApproval(r *approval.Record, first approval.Transition) error {
	rb, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tb, err := json.Marshal(first)
	if err != nil {
		return err
	}
	return s.batchUpdate("create approval", func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketApprovals)
		if bk.Get(approvalKey(r.ID)) != nil {
			return fmt.Errorf("approval %s exists: %w", r.ID, approval.ErrConflict)
		}
		if first.Seq != 1 {
			return fmt.Errorf("approval %s: first transition has seq %d: %w", r.ID, first.Seq, approval.ErrConflict)
		}
		if err := bk.Put(approvalKey(r.ID), rb); err != nil {
			return err
		}
		return bk.Put(transitionKey(r.ID, 1), tb)
	})
}

// AppendApprovalTransition appends t to approval id; t.Seq must follow the
// last stored transition.
func (s *Store) AppendApprovalTransition(id string, t approval.Transition) error {
	tb, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return s.batchUpdate("append approval transition", func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketApprovals)
		if bk.Get(approvalKey(id)) == nil {
			return fmt.Errorf("%w: %s", approval.ErrUnknown, id)
		}
		last := 0
		c := bk.Cursor()
		p := transitionPrefix(id)
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			last = int(binary.BigEndian.Uint64(k[len(p):]))
		}
		if t.Seq != last+1 {
			return fmt.Errorf("approval %s: seq %d after %d: %w", id, t.Seq, last, approval.ErrConflict)
		}
		return bk.Put(transitionKey(id, t.Seq), tb)
	})
}

// Approval returns one approval record and its transitions.
func (s *Store) Approval(id string) (approval.Stored, error) {
	var out approval.Stored
	err := s.view("get approval", func(tx *bolt.Tx) error {
		var err error
		out, err = readApproval(tx.Bucket(bucketApprovals), id)
		return err
	})
	return out, err
}

func readApproval(bk *bolt.Bucket, id string) (approval.Stored, error) {
	v := bk.Get(approvalKey(id))
	if v == nil {
		return approval.Stored{}, fmt.Errorf("%w: %s", approval.ErrUnknown, id)
	}
	r := new(approval.Record)
	if err := json.Unmarshal(v, r); err != nil {
		return approval.Stored{}, fmt.Errorf("approval %s: %w", id, err)
	}
	out := approval.Stored{Record: r}
	c := bk.Cursor()
	p := transitionPrefix(id)
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		var t approval.Transition
		if err := json.Unmarshal(v, &t); err != nil {
			return approval.Stored{}, fmt.Errorf("approval %s transition: %w", id, err)
		}
		out.Transitions = append(out.Transitions, t)
	}
	return out, nil
}

// Approvals returns every approval record with its transitions, in ID
// order (UUIDv7 IDs: oldest first).
func (s *Store) Approvals() ([]approval.Stored, error) {
	var out []approval.Stored
	err := s.view("list approvals", func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketApprovals)
		c := bk.Cursor()
		for k, _ := c.Seek([]byte("r/")); k != nil && bytes.HasPrefix(k, []byte("r/")); k, _ = c.Next() {
			st, err := readApproval(bk, string(k[2:]))
			if err != nil {
				return err
			}
			out = append(out, st)
		}
		return nil
	})
	return out, err
}
