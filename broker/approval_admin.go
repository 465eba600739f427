package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/mcpbroker/mcpbroker/broker/approval"
	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/broker/store"
)

// Approval admin API, served on the owner-only admin socket (the socket's
// file permissions are its authentication: its owner is an operator, a
// member of every approver group, who names themselves in "approver").
// Separation of duties still applies to that name. Paths:
//
//	GET  /v1/approvals                 pending approvals (?all=1: every one)
//	GET  /v1/approvals/{id}            one, with its transitions
//	POST /v1/approvals/{id}/approve    ApprovalDecision
//	POST /v1/approvals/{id}/deny       ApprovalDecision
const ApprovalsPath = "/v1/approvals"

// ApprovalDecision is what `mcpbroker approvals approve|deny` sends.
type ApprovalDecision struct {
	Approver string `json:"approver"`
	Comment  string `json:"comment,omitempty"`
}

// OfflineApprovals is the approval service over a store no broker holds
// (the CLI without a running broker): decisions land in the store and in
// the audit ledger, and a restarted broker sees them.
func OfflineApprovals(st *store.Store, log *slog.Logger) *approval.Service {
	ledger := audit.NewLedger(st, log)
	return approval.New(approval.Options{Store: st, OnTransition: func(r *approval.Record, t approval.Transition) {
		if ev, ok := approvalTransitionEvent(r, t); ok {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := ledger.Record(ctx, ev); err != nil && log != nil {
				log.Error("audit record not written", "type", ev.Type, "err", err)
			}
		}
	}})
}

// DecideApproval applies an operator's decision (CLI channel).
func DecideApproval(svc *approval.Service, id, action string, d ApprovalDecision) (*approval.Record, error) {
	var approve bool
	switch action {
	case "approve":
		approve = true
	case "deny":
	default:
		return nil, fmt.Errorf("action %q is not approve or deny", action)
	}
	if d.Approver == "" {
		return nil, errors.New("approver: required (who decides)")
	}
	return svc.Decide(id, approval.Decision{Approve: approve, Channel: approval.ChannelCLI, Comment: d.Comment,
		By: approval.Approver{ID: d.Approver, Operator: true}})
}

// decideAndRecord is decide through a broker channel, recording a refusal.
func (b *Broker) decideAndRecord(ctx context.Context, id string, d approval.Decision) (*approval.Record, error) {
	r, err := b.approvals.svc.Decide(id, d)
	if err != nil {
		ev := audit.Event{Type: audit.RequestRejected, Method: "approvals/decide", Decision: audit.DecisionDeny,
			Detail: truncate(fmt.Sprintf("decision by %q via %s refused: %v", d.By.ID, d.Channel, err), 500)}
		if r != nil {
			ev.CallID, ev.Session, ev.Agent, ev.Initiator, ev.Tenant, ev.Chain, ev.Task = r.CallID, r.Session, r.Agent, r.Initiator, r.Tenant, r.Chain, r.Task
			ev.Server, ev.Target = r.Server, r.Tool
		}
		b.record(context.WithoutCancel(ctx), ev)
		b.log.Warn("approval decision refused", "approval", id, "by", d.By.ID, "channel", d.Channel, "err", err)
	} else {
		b.log.Info("approval decided", "approval", id, "by", d.By.ID, "channel", d.Channel, "state", r.State)
	}
	return r, err
}

// approvalStatus maps service errors to HTTP status codes.
func approvalStatus(err error) int {
	switch {
	case errors.Is(err, approval.ErrUnknown):
		return http.StatusNotFound
	case errors.Is(err, approval.ErrSeparation), errors.Is(err, approval.ErrNotInGroup), errors.Is(err, approval.ErrWrongChannel):
		return http.StatusForbidden
	case errors.Is(err, approval.ErrNotPending), errors.Is(err, approval.ErrExpired), errors.Is(err, approval.ErrConflict):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

func writeJSONStatus(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (b *Broker) approvalAdmin(mux *http.ServeMux) {
	if b.approvals == nil {
		return
	}
	svc := b.approvals.svc
	mux.HandleFunc("GET "+ApprovalsPath, func(w http.ResponseWriter, r *http.Request) {
		rs, err := svc.List(r.URL.Query().Get("all") != "")
		if err != nil {
			writeJSONStatus(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		if rs == nil {
			rs = []*approval.Record{}
		}
		writeJSONStatus(w, http.StatusOK, rs)
	})
	mux.HandleFunc("GET "+ApprovalsPath+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		rec, err := svc.Get(r.PathValue("id"))
		if err != nil {
			writeJSONStatus(w, approvalStatus(err), map[string]string{"error": err.Error()})
			return
		}
		writeJSONStatus(w, http.StatusOK, rec)
	})
	mux.HandleFunc("POST "+ApprovalsPath+"/{id}/{action}", func(w http.ResponseWriter, r *http.Request) {
		var d ApprovalDecision
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d); err != nil {
			writeJSONStatus(w, http.StatusBadRequest, map[string]string{"error": "decision: " + err.Error()})
			return
		}
		action := r.PathValue("action")
		if action != "approve" && action != "deny" {
			writeJSONStatus(w, http.StatusNotFound, map[string]string{"error": "unknown action " + action})
			return
		}
		if d.Approver == "" {
			writeJSONStatus(w, http.StatusBadRequest, map[string]string{"error": "approver: required"})
			return
		}
		rec, err := b.decideAndRecord(r.Context(), r.PathValue("id"), approval.Decision{Approve: action == "approve",
			Channel: approval.ChannelCLI, Comment: d.Comment, By: approval.Approver{ID: d.Approver, Operator: true}})
		if err != nil {
			writeJSONStatus(w, approvalStatus(err), map[string]string{"error": err.Error()})
			return
		}
		writeJSONStatus(w, http.StatusOK, rec)
	})
}
