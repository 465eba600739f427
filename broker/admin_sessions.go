package broker

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker/audit"
)

// Session admin API, on the owner-only admin socket:
//
//	GET  /v1/sessions              list
//	GET  /v1/sessions/{id}         show
//	POST /v1/sessions/{id}/revoke  revoke: the session's next request is refused
const SessionsPath = "/v1/sessions"

func (b *Broker) sessionAdmin(mux *http.ServeMux) {
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	fail := func(w http.ResponseWriter, err error) {
		code := http.StatusInternalServerError
		if errors.Is(err, agents.ErrUnknownSession) {
			code = http.StatusNotFound
		}
		writeJSON(w, code, map[string]string{"error": err.Error()})
	}
	mux.HandleFunc("GET "+SessionsPath, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.sessions.List())
	})
	mux.HandleFunc("GET "+SessionsPath+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		rec, err := b.sessions.Get(r.PathValue("id"))
		if err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rec)
	})
	mux.HandleFunc("POST "+SessionsPath+"/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		rec, err := b.sessions.Revoke(r.PathValue("id"))
		if err != nil {
			fail(w, err)
			return
		}
		b.record(context.WithoutCancel(r.Context()), audit.Event{Type: audit.SessionClosed, Session: rec.ID, Agent: rec.Agent,
			Initiator: rec.Initiator, Tenant: rec.Tenant, Detail: "revoked by operator"})
		writeJSON(w, http.StatusOK, rec)
	})
}
