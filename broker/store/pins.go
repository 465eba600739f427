package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Pin is the reviewed definition of one downstream tool, keyed
// "<server>/<tool>". Pending holds a changed definition awaiting review.
type Pin struct {
	Key           string          `json:"key"`
	Digest        string          `json:"digest"`
	Definition    json.RawMessage `json:"definition"`
	PinnedAt      time.Time       `json:"pinned_at"`
	PinnedBy      string          `json:"pinned_by"`
	PendingDigest string          `json:"pending_digest,omitempty"`
	Pending       json.RawMessage `json:"pending,omitempty"`
	ChangedAt     *time.Time      `json:"changed_at,omitempty"`
}

// GetPin returns the pin for key, or nil if the tool was never seen.
func (s *Store) GetPin(key string) (*Pin, error) {
	var p *Pin
	err := s.view("get pin", func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketPins).Get([]byte(key))
		if v == nil {
			return nil
		}
		p = new(Pin)
		return json.Unmarshal(v, p)
	})
	return p, err
}

// PutPin stores p.
func (s *Store) PutPin(p *Pin) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return s.batchUpdate("put pin", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPins).Put([]byte(p.Key), b)
	})
}

// ListPins returns every pin, by key.
func (s *Store) ListPins() ([]*Pin, error) {
	var out []*Pin
	err := s.view("list pins", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPins).ForEach(func(k, v []byte) error {
			p := new(Pin)
			if err := json.Unmarshal(v, p); err != nil {
				return fmt.Errorf("pin %s: %w", k, err)
			}
			out = append(out, p)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, err
}

// PutPins stores several pins in one transaction.
func (s *Store) PutPins(ps []*Pin) error {
	if len(ps) == 0 {
		return nil
	}
	enc := make([][]byte, len(ps))
	for i, p := range ps {
		b, err := json.Marshal(p)
		if err != nil {
			return err
		}
		enc[i] = b
	}
	return s.batchUpdate("put pins", func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketPins)
		for i, p := range ps {
			if err := bk.Put([]byte(p.Key), enc[i]); err != nil {
				return err
			}
		}
		return nil
	})
}
