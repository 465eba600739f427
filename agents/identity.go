package agents

import (
	"context"
	"strings"
)

// InitiatorKind says whether the initiator is a human or a workload.
type InitiatorKind string

const (
	InitiatorUser     InitiatorKind = "user"
	InitiatorWorkload InitiatorKind = "workload"
)

// Identity is who is calling (Agent, a SPIFFE ID) and on whose behalf
// (Initiator, within Tenant). It is request-scoped and immutable.
type Identity struct {
	Agent         string
	AgentClasses  []string
	Initiator     string
	InitiatorKind InitiatorKind
	Tenant        string
	Groups        []string
	// Method records how the identity was established: "dev-token",
	// "dev-default", "stdio-default" (and later "x509-svid", "jwt-svid").
	Method string
}

// Key is a stable string for binding state to this identity. It does not
// include Method: the same principals reached by another method are the same
// identity.
func (i Identity) Key() string {
	return strings.Join([]string{i.Agent, string(i.InitiatorKind), i.Initiator, i.Tenant}, "\x00")
}

// IsZero reports whether no identity is set.
func (i Identity) IsZero() bool { return i.Agent == "" }

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity in ctx, if any.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok && !id.IsZero()
}

type authErrKey struct{}

// WithAuthError records in ctx why authentication failed, so the pipeline
// can refuse the request with a precise reason and an audit record.
func WithAuthError(ctx context.Context, err error) context.Context {
	return context.WithValue(ctx, authErrKey{}, err)
}

// AuthErrorFromContext returns the recorded authentication failure.
func AuthErrorFromContext(ctx context.Context) error {
	err, _ := ctx.Value(authErrKey{}).(error)
	return err
}
