package audit

import (
	"fmt"
	"slices"
	"time"
)

// EventVersion is the schema version Record writes into Event.Version.
const EventVersion = 1

// Type is the kind of an audit event. It is a closed set; see Validate.
type Type string

// Event types.
const (
	CallDecided       Type = "call.decided"       // a decision, recorded before the call is forwarded
	CallCompleted     Type = "call.completed"     // the outcome, recorded before the response goes back
	AuthFailed        Type = "auth.failed"        // a caller could not be authenticated
	SessionOpened     Type = "session.opened"     // a broker session began
	SessionClosed     Type = "session.closed"     // a broker session ended
	BrokerStarted     Type = "broker.started"     // the broker began serving
	BrokerStopped     Type = "broker.stopped"     // the broker stopped serving
	PolicyLoaded      Type = "policy.loaded"      // a policy set was accepted
	PolicyRejected    Type = "policy.rejected"    // a policy set failed to load
	ToolChanged       Type = "tool.changed"       // a downstream tool definition changed
	RequestRejected   Type = "request.rejected"   // a request was refused before a decision
	TaskGranted       Type = "task.granted"       // a task boundary was granted to a session
	TaskRevoked       Type = "task.revoked"       // a task grant was revoked
	ApprovalRequested Type = "approval.requested" // a call waits for a human decision
	ApprovalDecided   Type = "approval.decided"   // a human approved or denied a call
	ToolPinned        Type = "tool.pinned"        // a downstream tool definition was pinned
	// LedgerCheckpoint carries a signed Checkpoint of the entry before it;
	// written by Ledger.Checkpoint, every N entries and at shutdown.
	LedgerCheckpoint Type = "ledger.checkpoint"
)

var types = map[Type]bool{
	CallDecided: true, CallCompleted: true, AuthFailed: true, SessionOpened: true,
	SessionClosed: true, BrokerStarted: true, BrokerStopped: true, PolicyLoaded: true,
	PolicyRejected: true, ToolChanged: true, RequestRejected: true, TaskGranted: true,
	TaskRevoked: true, ApprovalRequested: true, ApprovalDecided: true, ToolPinned: true,
	LedgerCheckpoint: true,
}

// Types returns every declared event type, sorted.
func Types() []Type {
	out := make([]Type, 0, len(types))
	for t := range types {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Validate returns an error wrapping ErrInvalidEvent unless t is one of the
// declared event types.
func (t Type) Validate() error {
	if !types[t] {
		return fmt.Errorf("event type %q: %w", string(t), ErrInvalidEvent)
	}
	return nil
}

// Values of Event.Decision.
const (
	DecisionAllow         = "allow"
	DecisionDeny          = "deny"
	DecisionNeedsApproval = "needs_approval"
)

// Values of Event.Status.
const (
	StatusOK        = "ok"
	StatusToolError = "tool_error"
	StatusError     = "error"
	StatusCancelled = "cancelled"
	StatusTimeout   = "timeout"
)

// Pass is one Cedar evaluation of a call: one per principal on the chain.
type Pass struct {
	Principal string   `json:"principal"`
	Allowed   bool     `json:"allowed"`
	Reasons   []string `json:"reasons,omitempty"`
	Errors    []string `json:"errors,omitempty"`
}

// Event is one audit record. Every field is either an identifier, a stable
// code or a digest: never a secret, a raw argument value or downstream error
// text. The JSON encoding is part of the chain format (see Canonical); a
// change to a field's name, type or tag changes the hashes and needs a new
// EventVersion.
type Event struct {
	Type       Type      `json:"type"`
	Version    int       `json:"v"`                     // schema version of the event, EventVersion
	Time       time.Time `json:"time"`                  // UTC, RFC3339Nano
	CallID     string    `json:"call_id,omitempty"`     // UUIDv7
	Session    string    `json:"session,omitempty"`     // broker session ID
	Agent      string    `json:"agent,omitempty"`       // acting agent's SPIFFE ID
	Initiator  string    `json:"initiator,omitempty"`   // on whose behalf
	Tenant     string    `json:"tenant,omitempty"`      //
	Chain      []string  `json:"chain,omitempty"`       // delegation chain, outermost agent first
	Task       string    `json:"task,omitempty"`        // delegated task the call was made in (lead: keep this field)
	Method     string    `json:"method,omitempty"`      // tools/call, resources/read, prompts/get, ...
	Server     string    `json:"server,omitempty"`      // downstream server name
	Target     string    `json:"target,omitempty"`      // tool name as the agent sees it, resource URI, prompt name
	ArgsDigest string    `json:"args_digest,omitempty"` // "hmac-sha256:<hex>" (Hasher)
	// Args is the classified argument summary (Classify): public values as
	// given, sensitive values as Hasher digests, secrets as Redacted.
	Args         map[string]string `json:"args,omitempty"`
	Decision     string            `json:"decision,omitempty"`      // DecisionAllow, DecisionDeny, DecisionNeedsApproval
	Reason       string            `json:"reason,omitempty"`        // stable reason code: denied_by_policy, tool_unavailable, ...
	PolicyIDs    []string          `json:"policy_ids,omitempty"`    // determining policy IDs
	PolicyDigest string            `json:"policy_digest,omitempty"` // digest of the policy set that decided
	Passes       []Pass            `json:"passes,omitempty"`        // one per principal on the chain
	// Shadow is what log-only policy would have done: the outcome had the
	// @mode("log_only") policies been enforced, and their effects
	// ("shadow_deny:<policy id>", "shadow_allow:<id>", "shadow_error:<id>").
	ShadowOutcome string   `json:"shadow_outcome,omitempty"`
	Shadow        []string `json:"shadow,omitempty"`
	// Candidate is what a candidate policy set (policy.mode log_only for a
	// whole set) would have decided: "<outcome> <digest> <policy ids>".
	Candidate  string  `json:"candidate,omitempty"`
	Status     string  `json:"status,omitempty"`      // outcome: StatusOK, StatusToolError, ...
	ErrorClass string  `json:"error_class,omitempty"` // stable class of a failed outcome
	LatencyMS  float64 `json:"latency_ms,omitempty"`  // forward latency in milliseconds
	Detail     string  `json:"detail,omitempty"`      // operator-facing detail (never secrets)
	// Checkpoint is set on LedgerCheckpoint events only.
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
}

// Validate checks the closed sets: Type, and Decision and Status when set.
func (ev *Event) Validate() error {
	if err := ev.Type.Validate(); err != nil {
		return err
	}
	switch ev.Decision {
	case "", DecisionAllow, DecisionDeny, DecisionNeedsApproval:
	default:
		return fmt.Errorf("decision %q: %w", ev.Decision, ErrInvalidEvent)
	}
	if (ev.Type == LedgerCheckpoint) != (ev.Checkpoint != nil) {
		return fmt.Errorf("checkpoint field on a %s event: %w", ev.Type, ErrInvalidEvent)
	}
	switch ev.Status {
	case "", StatusOK, StatusToolError, StatusError, StatusCancelled, StatusTimeout:
	default:
		return fmt.Errorf("status %q: %w", ev.Status, ErrInvalidEvent)
	}
	return nil
}

// Entry is one ledger entry as stored and as served by Handler.
type Entry struct {
	Seq   uint64 `json:"seq"`   // 1-based, no gaps
	Prev  string `json:"prev"`  // hex hash of entry Seq-1, "" for the first
	Hash  string `json:"hash"`  // hex hash of this entry (package doc)
	Event Event  `json:"event"` // the record
}
