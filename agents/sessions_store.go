package agents

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// ErrSessionRevoked means an operator revoked the session.
var ErrSessionRevoked = errors.New("session revoked")

// SessionRecord is what a SessionStore keeps of one transport session: the
// identity it is bound to (agent, initiator, tenant) and its lifecycle.
type SessionRecord struct {
	ID            string        `json:"id"`
	Agent         string        `json:"agent,omitempty"`
	Initiator     string        `json:"initiator,omitempty"`
	InitiatorKind InitiatorKind `json:"initiator_kind,omitempty"`
	Tenant        string        `json:"tenant,omitempty"`
	Groups        []string      `json:"groups,omitempty"`
	Method        string        `json:"method,omitempty"`
	Task          string        `json:"task,omitempty"` // task first presented in the session
	Opened        time.Time     `json:"opened"`
	Ended         time.Time     `json:"ended,omitzero"`
	RevokedAt     time.Time     `json:"revoked_at,omitzero"`
}

// State is "live", "ended" or "revoked".
func (r SessionRecord) State() string {
	switch {
	case !r.RevokedAt.IsZero():
		return "revoked"
	case !r.Ended.IsZero():
		return "ended"
	}
	return "live"
}

// SessionStore persists bound sessions so that they survive a restart.
// broker/store implements it; agents never imports the store.
type SessionStore interface {
	PutSession(SessionRecord) error
	ListSessions() ([]SessionRecord, error)
	DeleteSession(id string) error
}

// Persist loads the sessions in st (forgetting those that ended more than
// keep ago) and writes every later binding, end and revocation through to
// it. Call it once, before serving.
func (s *Sessions) Persist(st SessionStore) error {
	recs, err := st.ListSessions()
	if err != nil {
		return fmt.Errorf("load sessions: %w", err)
	}
	cut := s.now().Add(-s.keep)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.store = st
	for _, r := range recs {
		end := r.Ended
		if !r.RevokedAt.IsZero() && (end.IsZero() || r.RevokedAt.Before(end)) {
			end = r.RevokedAt
		}
		if !end.IsZero() && end.Before(cut) {
			if err := st.DeleteSession(r.ID); err != nil {
				return fmt.Errorf("prune session: %w", err)
			}
			continue
		}
		s.sessions[r.ID] = &sessionState{
			identity: Identity{Agent: r.Agent, Initiator: r.Initiator, InitiatorKind: r.InitiatorKind, Tenant: r.Tenant,
				Groups: r.Groups, Method: r.Method},
			task: r.Task, bound: r.Agent != "", opened: r.Opened, ended: r.Ended, revoked: r.RevokedAt,
		}
	}
	return nil
}

func (st *sessionState) record(id string) SessionRecord {
	return SessionRecord{ID: id, Agent: st.identity.Agent, Initiator: st.identity.Initiator,
		InitiatorKind: st.identity.InitiatorKind, Tenant: st.identity.Tenant, Groups: st.identity.Groups,
		Method: st.identity.Method, Task: st.task, Opened: st.opened, Ended: st.ended, RevokedAt: st.revoked}
}

// persistLocked writes the session through; the caller holds s.mu. A
// write error is returned: a binding that cannot be stored is refused.
func (s *Sessions) persistLocked(id string, st *sessionState) error {
	if s.store == nil {
		return nil
	}
	if err := s.store.PutSession(st.record(id)); err != nil {
		return fmt.Errorf("store session: %w", err)
	}
	return nil
}

// Revoke ends a session for good: its next request is refused with
// ErrSessionRevoked.
func (s *Sessions) Revoke(id string) (SessionRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.sessions[id]
	if !ok {
		return SessionRecord{}, ErrUnknownSession
	}
	if st.revoked.IsZero() {
		st.revoked = s.now()
		if st.ended.IsZero() {
			st.ended = st.revoked
		}
		if err := s.persistLocked(id, st); err != nil {
			return SessionRecord{}, err
		}
	}
	return st.record(id), nil
}

// Get returns one session.
func (s *Sessions) Get(id string) (SessionRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.sessions[id]
	if !ok {
		return SessionRecord{}, ErrUnknownSession
	}
	return st.record(id), nil
}

// List returns the sessions bound to an identity, oldest first.
func (s *Sessions) List() []SessionRecord {
	s.mu.Lock()
	out := make([]SessionRecord, 0, len(s.sessions))
	for id, st := range s.sessions {
		if st.bound {
			out = append(out, st.record(id))
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Opened.Before(out[j].Opened) })
	return out
}

// Detach stops writing through to the store, so that sessions torn down
// by a shutdown stay live in the store for the next start.
func (s *Sessions) Detach() {
	s.mu.Lock()
	s.store = nil
	s.mu.Unlock()
}
