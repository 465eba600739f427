package agents

import (
	"errors"
	"net/http/httptest"
	"testing"
	"time"
)

func TestDevAuthenticate(t *testing.T) {
	alice := Identity{Agent: "spiffe://demo.local/agent/planner", Initiator: "alice"}
	bob := Identity{Agent: "spiffe://demo.local/agent/coder", Initiator: "bob"}
	d, err := NewDev([]DevToken{{Token: "token-alice-123", Identity: alice}, {Token: "token-bob-4567", Identity: bob}},
		Identity{Agent: "spiffe://demo.local/agent/dev", Initiator: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, header, agent string
		err                 error
	}{
		{"no token is the default", "", "spiffe://demo.local/agent/dev", nil},
		{"alice", "Bearer token-alice-123", alice.Agent, nil},
		{"scheme case-insensitive", "bearer token-bob-4567", bob.Agent, nil},
		{"unknown token", "Bearer nope-nope-nope", "", ErrInvalidToken},
		{"basic auth", "Basic dXNlcjpwYXNz", "", ErrInvalidToken},
		{"empty bearer", "Bearer ", "", ErrInvalidToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/mcp", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			id, err := d.Authenticate(r)
			if !errors.Is(err, tc.err) || id.Agent != tc.agent {
				t.Errorf("got %q, %v; want %q, %v", id.Agent, err, tc.agent, tc.err)
			}
		})
	}
	noDefault, _ := NewDev(nil, Identity{})
	if _, err := noDefault.Authenticate(httptest.NewRequest("POST", "/mcp", nil)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("without default: %v", err)
	}
	if _, err := NewDev([]DevToken{{Token: "short", Identity: alice}}, Identity{}); err == nil {
		t.Error("short token accepted")
	}
	if _, err := NewDev([]DevToken{{Token: "same-token-1", Identity: alice}, {Token: "same-token-1", Identity: bob}}, Identity{}); err == nil {
		t.Error("duplicate token accepted")
	}
}

func TestSessionsBindToIdentity(t *testing.T) {
	now := time.Unix(1000, 0)
	s := NewSessions(time.Minute, func() time.Time { return now })
	alice := Identity{Agent: "spiffe://d/agent/a", Initiator: "alice"}
	mallory := Identity{Agent: "spiffe://d/agent/m", Initiator: "alice"}

	id := s.Generate()
	if id2 := s.Generate(); id == id2 || len(id) < 30 {
		t.Fatalf("weak or repeated IDs: %q %q", id, id2)
	}
	if ended, err := s.Validate(id); err != nil || ended {
		t.Fatalf("Validate fresh: %v %v", ended, err)
	}
	if _, err := s.Validate("mcpb-forged"); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("forged ID: %v", err)
	}
	if err := s.Bind(id, alice); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(id, alice); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(id, mallory); !errors.Is(err, ErrSessionMismatch) {
		t.Fatalf("other agent: %v", err)
	}
	if err := s.Bind(id, mallory); !errors.Is(err, ErrSessionMismatch) {
		t.Fatalf("rebind: %v", err)
	}
	if _, err := s.Terminate(id); err != nil {
		t.Fatal(err)
	}
	if ended, _ := s.Validate(id); !ended {
		t.Fatal("terminated session still live")
	}
	if err := s.Check(id, alice); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("ended session usable: %v", err)
	}
	// Ended sessions are forgotten after keep.
	now = now.Add(2 * time.Minute)
	s.Generate()
	if _, err := s.Validate(id); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("ended session not forgotten: %v", err)
	}
}

type memSessionStore struct{ m map[string]SessionRecord }

func (m *memSessionStore) PutSession(r SessionRecord) error { m.m[r.ID] = r; return nil }
func (m *memSessionStore) ListSessions() ([]SessionRecord, error) {
	var out []SessionRecord
	for _, r := range m.m {
		out = append(out, r)
	}
	return out, nil
}
func (m *memSessionStore) DeleteSession(id string) error { delete(m.m, id); return nil }

// TestSessionTaskSurvivesRestart: the task bound to a session is persisted
// with it, so after a restart the session cannot fall back to a wider
// default task.
func TestSessionTaskSurvivesRestart(t *testing.T) {
	st := &memSessionStore{m: map[string]SessionRecord{}}
	s := NewSessions(time.Hour, nil)
	if err := s.Persist(st); err != nil {
		t.Fatal(err)
	}
	id := s.Generate()
	alice := Identity{Agent: "spiffe://d/agent/a", Initiator: "alice"}
	if err := s.Bind(id, alice); err != nil {
		t.Fatal(err)
	}
	if err := s.BindTask(id, "task_1"); err != nil {
		t.Fatal(err)
	}
	if err := s.BindTask(id, "task_2"); !errors.Is(err, ErrOutsideTask) {
		t.Fatalf("second task in the same session: %v", err)
	}
	restarted := NewSessions(time.Hour, nil)
	if err := restarted.Persist(st); err != nil {
		t.Fatal(err)
	}
	if got := restarted.Task(id); got != "task_1" {
		t.Fatalf("after restart the session's task is %q", got)
	}
	if err := restarted.BindTask(id, "task_2"); !errors.Is(err, ErrOutsideTask) {
		t.Fatalf("after restart, another task: %v", err)
	}
}
