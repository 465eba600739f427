package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/mcpbroker/mcpbroker/agents"
)

// Keys in the tasks bucket: t/<id> holds the task as JSON, h/<hash> the ID
// a handle hash names, c/<id> the call counter (big-endian uint64).

var _ agents.TaskStore = (*Store)(nil)

// PutTask creates or replaces a task (a revocation is a replace with
// RevokedAt set).
func (s *Store) PutTask(t *agents.Task) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return s.batchUpdate("put task", func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketTasks)
		if err := bk.Put([]byte("t/"+t.ID), b); err != nil {
			return err
		}
		if t.HandleHash != "" {
			return bk.Put([]byte("h/"+t.HandleHash), []byte(t.ID))
		}
		return nil
	})
}

// GetTask returns the task with id, or agents.ErrUnknownTask.
func (s *Store) GetTask(id string) (*agents.Task, error) {
	var t *agents.Task
	err := s.view("get task", func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTasks).Get([]byte("t/" + id))
		if v == nil {
			return fmt.Errorf("%w: %s", agents.ErrUnknownTask, id)
		}
		t = new(agents.Task)
		return json.Unmarshal(v, t)
	})
	return t, err
}

// TaskByHandle returns the task whose handle hashes to hash.
func (s *Store) TaskByHandle(hash string) (*agents.Task, error) {
	var t *agents.Task
	err := s.view("find task", func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketTasks)
		id := bk.Get([]byte("h/" + hash))
		if id == nil {
			return agents.ErrUnknownTask
		}
		v := bk.Get(append([]byte("t/"), id...))
		if v == nil {
			return agents.ErrUnknownTask
		}
		t = new(agents.Task)
		return json.Unmarshal(v, t)
	})
	return t, err
}

// ListTasks returns every task, oldest first.
func (s *Store) ListTasks() ([]*agents.Task, error) {
	var out []*agents.Task
	err := s.view("list tasks", func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketTasks).Cursor()
		for k, v := c.Seek([]byte("t/")); k != nil && strings.HasPrefix(string(k), "t/"); k, v = c.Next() {
			t := new(agents.Task)
			if err := json.Unmarshal(v, t); err != nil {
				return fmt.Errorf("task %s: %w", k, err)
			}
			out = append(out, t)
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}

// SpendCalls adds one call to each task in ids, all or none, in one
// transaction: the counters are exact under concurrency.
func (s *Store) SpendCalls(ids []string, limits []int64) error {
	return s.batchUpdate("spend call", func(tx *bolt.Tx) error { return spendTx(tx, ids, limits) })
}

// spendTx charges one call to each task in ids, all or none.
func spendTx(tx *bolt.Tx, ids []string, limits []int64) error {
	bk := tx.Bucket(bucketTasks)
	next := make([]uint64, len(ids))
	for i, id := range ids {
		var n uint64
		if v := bk.Get([]byte("c/" + id)); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		if limits[i] > 0 && n+1 > uint64(limits[i]) {
			return fmt.Errorf("%w: task %s has used %d of %d calls", agents.ErrBudget, id, n, limits[i])
		}
		next[i] = n + 1
	}
	for i, id := range ids {
		if err := bk.Put([]byte("c/"+id), u64(next[i])); err != nil {
			return err
		}
	}
	return nil
}

// CallCount returns the calls spent by a task.
func (s *Store) CallCount(id string) (int64, error) {
	n, err := s.callCount(id)
	return int64(n), err
}

// batchUpdate runs fn in a group-committed write transaction (write; fn may
// run more than once, so it must only depend on the transaction).
func (s *Store) batchUpdate(op string, fn func(*bolt.Tx) error) error {
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", op, ErrClosed)
	}
	if err := s.write(fn); err != nil {
		return fmt.Errorf("%s: %w", op, mapErr(err))
	}
	return nil
}
