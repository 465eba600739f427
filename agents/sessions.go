package agents

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Sessions issues MCP transport session IDs (it implements mcp-go's
// server.SessionIdManager) and binds each to the identity that opened it.
// Unlike mcp-go's stateless default it rejects IDs it never issued, and
// unlike its stateful one it forgets ended sessions after a while.
type Sessions struct {
	mu       sync.Mutex
	sessions map[string]*sessionState
	now      func() time.Time
	keep     time.Duration
	store    SessionStore // nil: memory only (sessions_store.go)
}

type sessionState struct {
	identity Identity
	task     string // the task first presented in the session, if any
	bound    bool
	ended    time.Time
	opened   time.Time
	revoked  time.Time
}

const sessionPrefix = "mcpb-"

// NewSessions returns an empty registry. Ended sessions are remembered for
// keep (so a late request gets "terminated", not "unknown").
func NewSessions(keep time.Duration, now func() time.Time) *Sessions {
	if now == nil {
		now = time.Now
	}
	return &Sessions{sessions: map[string]*sessionState{}, now: now, keep: keep}
}

// Generate returns a fresh random session ID (192 bits).
func (s *Sessions) Generate() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never happens on supported platforms
	}
	id := sessionPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	s.mu.Lock()
	s.sessions[id] = &sessionState{opened: s.now()}
	s.gcLocked()
	s.mu.Unlock()
	return id
}

// Validate reports whether id was issued here and whether it has ended.
func (s *Sessions) Validate(id string) (bool, error) {
	if !strings.HasPrefix(id, sessionPrefix) {
		return false, ErrUnknownSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.sessions[id]
	if !ok {
		return false, ErrUnknownSession
	}
	return !st.ended.IsZero(), nil
}

// Terminate ends a session.
func (s *Sessions) Terminate(id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.sessions[id]
	if !ok {
		return false, ErrUnknownSession
	}
	if st.ended.IsZero() {
		st.ended = s.now()
		if st.bound {
			_ = s.persistLocked(id, st) // best effort: the session is over either way
		}
	}
	return false, nil
}

// Bind ties a freshly issued session to id. Binding twice to another
// identity fails.
func (s *Sessions) Bind(session string, id Identity) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.sessions[session]
	if !ok {
		return ErrUnknownSession
	}
	if st.bound && st.identity.Key() != id.Key() {
		return ErrSessionMismatch
	}
	if st.bound {
		return nil
	}
	st.identity, st.bound = id, true
	if err := s.persistLocked(session, st); err != nil {
		st.identity, st.bound = Identity{}, false
		return err
	}
	return nil
}

// Check verifies that session may be used by id. A session not bound yet
// (between initialize and its registration) is bound now.
func (s *Sessions) Check(session string, id Identity) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.sessions[session]
	if ok && !st.revoked.IsZero() {
		return ErrSessionRevoked
	}
	if !ok || !st.ended.IsZero() {
		return ErrUnknownSession
	}
	if !st.bound {
		st.identity, st.bound = id, true
		if err := s.persistLocked(session, st); err != nil {
			st.identity, st.bound = Identity{}, false
			return err
		}
		return nil
	}
	if st.identity.Key() != id.Key() {
		return ErrSessionMismatch
	}
	return nil
}

// BindTask ties session to the task first presented in it and persists
// the binding (so a restart cannot let the session fall back to a wider
// default task). Presenting another task later fails with ErrOutsideTask.
// An unknown session (stdio, tests) is ErrUnknownSession.
func (s *Sessions) BindTask(session, task string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.sessions[session]
	if !ok {
		return ErrUnknownSession
	}
	if st.task != "" {
		if st.task != task {
			return fmt.Errorf("%w: session is bound to task %s", ErrOutsideTask, st.task)
		}
		return nil
	}
	st.task = task
	if err := s.persistLocked(session, st); err != nil {
		st.task = ""
		return err
	}
	return nil
}

// Task returns the task bound to session ("" if none).
func (s *Sessions) Task(session string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.sessions[session]; ok {
		return st.task
	}
	return ""
}

// Len returns the number of live sessions.
func (s *Sessions) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, st := range s.sessions {
		if st.ended.IsZero() {
			n++
		}
	}
	return n
}

func (s *Sessions) gcLocked() {
	cut := s.now().Add(-s.keep)
	for id, st := range s.sessions {
		if !st.ended.IsZero() && st.ended.Before(cut) {
			delete(s.sessions, id)
			if s.store != nil && st.bound {
				_ = s.store.DeleteSession(id)
			}
		}
	}
}
