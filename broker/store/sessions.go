package store

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/mcpbroker/mcpbroker/agents"
)

// The sessions bucket maps a session ID to its agents.SessionRecord as JSON.

var _ agents.SessionStore = (*Store)(nil)

// PutSession creates or replaces a session record.
func (s *Store) PutSession(r agents.SessionRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.batchUpdate("put session", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSessions).Put([]byte(r.ID), b)
	})
}

// ListSessions returns every stored session.
func (s *Store) ListSessions() ([]agents.SessionRecord, error) {
	var out []agents.SessionRecord
	err := s.view("list sessions", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
			var r agents.SessionRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("session %s: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// DeleteSession forgets a session.
func (s *Store) DeleteSession(id string) error {
	return s.batchUpdate("delete session", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSessions).Delete([]byte(id))
	})
}
