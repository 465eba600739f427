package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker/audit"
)

// Task admin API, served on the owner-only admin socket (the socket's file
// permissions are its authentication). Paths:
//
//	POST /v1/tasks              grant (TaskGrant) -> {"handle":…, "task":…}
//	GET  /v1/tasks              list
//	GET  /v1/tasks/{id}         show (with remaining calls)
//	POST /v1/tasks/{id}/revoke  revoke
const TasksPath = "/v1/tasks"

// TaskGrant is a grant request: what `mcpbroker task grant` sends.
type TaskGrant struct {
	Agent         string   `json:"agent"`
	Initiator     string   `json:"initiator"`
	InitiatorKind string   `json:"initiator_kind,omitempty"`
	Tenant        string   `json:"tenant,omitempty"`
	Groups        []string `json:"groups,omitempty"` // the initiator's groups (Cedar Team parents)
	Tools         []string `json:"tools"`
	Resources     []string `json:"resources,omitempty"`
	TTL           string   `json:"ttl"`
	MaxCalls      int64    `json:"max_calls"`
	MaxDepth      int      `json:"max_depth,omitempty"`
	Purpose       string   `json:"purpose,omitempty"`
}

// TaskView is a task with its spent budget, for show and list.
type TaskView struct {
	*agents.Task
	Calls     int64 `json:"calls"`
	Remaining int64 `json:"remaining"` // -1: unbounded
}

// GrantTask validates g and stores the task; the handle is returned once.
func GrantTask(ts *agents.Tasks, g TaskGrant, now time.Time) (string, *agents.Task, error) {
	var errs []error
	if err := ValidateSPIFFEID(g.Agent); err != nil && !isAgentPattern(g.Agent) {
		errs = append(errs, fmt.Errorf("agent: %w", err))
	}
	ttl, err := time.ParseDuration(g.TTL)
	if err != nil || ttl <= 0 {
		errs = append(errs, fmt.Errorf("ttl %q is not a positive duration", g.TTL))
	}
	kind := agents.InitiatorKind(g.InitiatorKind)
	if kind == "" {
		kind = agents.InitiatorUser
	}
	if kind != agents.InitiatorUser && kind != agents.InitiatorWorkload {
		errs = append(errs, fmt.Errorf("initiator_kind %q is not user or workload", g.InitiatorKind))
	}
	if err := errors.Join(errs...); err != nil {
		return "", nil, err
	}
	return ts.Grant(agents.Task{
		Initiator: g.Initiator, InitiatorKind: kind, Tenant: g.Tenant, Groups: g.Groups, Agent: g.Agent, Purpose: g.Purpose,
		Tools: g.Tools, Resources: g.Resources, MaxCalls: g.MaxCalls, MaxDepth: g.MaxDepth,
		ExpiresAt: now.Add(ttl), Source: "grant",
	})
}

func isAgentPattern(s string) bool {
	return len(s) > len("spiffe://") && s[:len("spiffe://")] == "spiffe://" && s[len(s)-1] == '*'
}

// ViewTask adds the spent budget to t.
func ViewTask(ts *agents.Tasks, t *agents.Task, calls int64) TaskView {
	rem, err := ts.Remaining(t)
	if err != nil {
		rem = 0
	}
	return TaskView{Task: t, Calls: calls, Remaining: rem}
}

func (b *Broker) taskAdmin(mux *http.ServeMux) {
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	fail := func(w http.ResponseWriter, err error) {
		code := http.StatusBadRequest
		if errors.Is(err, agents.ErrUnknownTask) {
			code = http.StatusNotFound
		}
		writeJSON(w, code, map[string]string{"error": err.Error()})
	}
	view := func(t *agents.Task) TaskView {
		n, _ := b.store.CallCount(t.ID)
		return ViewTask(b.tasks, t, n)
	}
	mux.HandleFunc("POST "+TasksPath, func(w http.ResponseWriter, r *http.Request) {
		var g TaskGrant
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&g); err != nil {
			fail(w, fmt.Errorf("grant: %w", err))
			return
		}
		h, t, err := GrantTask(b.tasks, g, b.now())
		if err != nil {
			fail(w, err)
			return
		}
		b.record(r.Context(), audit.Event{Type: audit.TaskGranted, Agent: t.Agent, Initiator: t.Initiator, Tenant: t.Tenant, Task: t.ID,
			Detail: fmt.Sprintf("granted by operator: tools %v, %d calls, until %s", t.Tools, t.MaxCalls, t.ExpiresAt.UTC().Format(time.RFC3339))})
		writeJSON(w, http.StatusCreated, map[string]any{"handle": h, "task": view(t)})
	})
	mux.HandleFunc("GET "+TasksPath, func(w http.ResponseWriter, r *http.Request) {
		ts, err := b.tasks.List()
		if err != nil {
			fail(w, err)
			return
		}
		out := make([]TaskView, 0, len(ts))
		for _, t := range ts {
			out = append(out, view(t))
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET "+TasksPath+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		t, err := b.tasks.Get(r.PathValue("id"))
		if err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, view(t))
	})
	mux.HandleFunc("POST "+TasksPath+"/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		t, err := b.tasks.Revoke(r.PathValue("id"))
		if err != nil {
			fail(w, err)
			return
		}
		b.record(context.WithoutCancel(r.Context()), audit.Event{Type: audit.TaskRevoked, Agent: t.Agent, Initiator: t.Initiator, Tenant: t.Tenant, Task: t.ID,
			Detail: "revoked by operator; descendants end at their next call"})
		writeJSON(w, http.StatusOK, view(t))
	})
}
