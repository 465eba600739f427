package agents

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
)

// DevToken maps one static bearer token to an identity. Dev mode only.
type DevToken struct {
	Token    string // the secret; never logged
	Identity Identity
}

// Dev authenticates with static bearer tokens from configuration. It exists
// for local development and demos; the broker refuses to run it on anything
// but loopback.
type Dev struct {
	tokens []devEntry
	def    Identity
}

type devEntry struct {
	sum [32]byte
	id  Identity
}

// NewDev returns a dev authenticator. def is used for requests without a
// token; a zero def refuses them.
func NewDev(tokens []DevToken, def Identity) (*Dev, error) {
	d := &Dev{def: def}
	seen := map[[32]byte]bool{}
	for i, t := range tokens {
		if len(t.Token) < 8 {
			return nil, fmt.Errorf("dev token %d: shorter than 8 characters", i)
		}
		sum := sha256.Sum256([]byte(t.Token))
		if seen[sum] {
			return nil, fmt.Errorf("dev token %d: same token as an earlier one", i)
		}
		seen[sum] = true
		id := t.Identity
		id.Method = "dev-token"
		if id.InitiatorKind == "" {
			id.InitiatorKind = InitiatorUser
		}
		d.tokens = append(d.tokens, devEntry{sum: sum, id: id})
	}
	if !def.IsZero() {
		d.def.Method = "dev-default"
		if d.def.InitiatorKind == "" {
			d.def.InitiatorKind = InitiatorUser
		}
	}
	return d, nil
}

// Default returns the default identity, if configured.
func (d *Dev) Default() (Identity, bool) { return d.def, !d.def.IsZero() }

// Authenticate maps the request's bearer token to an identity. Every token
// is compared in constant time.
func (d *Dev) Authenticate(r *http.Request) (Identity, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if d.def.IsZero() {
			return Identity{}, ErrUnauthenticated
		}
		return d.def, nil
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return Identity{}, fmt.Errorf("%w: authorization header is not a bearer token", ErrInvalidToken)
	}
	sum := sha256.Sum256([]byte(tok))
	var found *Identity
	for i := range d.tokens {
		if subtle.ConstantTimeCompare(sum[:], d.tokens[i].sum[:]) == 1 {
			found = &d.tokens[i].id
		}
	}
	if found == nil {
		return Identity{}, ErrInvalidToken
	}
	return *found, nil
}
