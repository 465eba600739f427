package approval

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// StatePrefix starts every requestState the approval stage seals, so the
// broker can tell it from other MRTR states.
const StatePrefix = "mcpba1."

// Claims are what a sealed requestState binds: the approval, who may
// present it (a hash of the identity), the digest of the exact call and an
// expiry. Single use is the record's business: a state whose approval is
// no longer pending is refused by Service.Decide.
type Claims struct {
	Approval string `json:"a"`
	Who      string `json:"w"` // hex sha256 of the identity key
	Digest   string `json:"d"` // call digest
	Exp      int64  `json:"e"` // unix seconds
	Nonce    string `json:"n"`
}

// Sealer seals and opens requestStates with HMAC-SHA256 under a broker
// key. The zero value is not usable; use NewSealer.
type Sealer struct{ key []byte }

// NewSealer returns a Sealer over key, which must be at least 32 bytes.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("approval sealing key: %d bytes, want at least 32", len(key))
	}
	return &Sealer{key: append([]byte(nil), key...)}, nil
}

// String hides the key.
func (s *Sealer) String() string { return "approval.Sealer{key:<redacted>}" }

// Who hashes an identity key for Claims.Who.
func Who(identityKey string) string {
	h := sha256.Sum256([]byte(identityKey))
	return hex.EncodeToString(h[:])
}

// Seal returns "mcpba1.<claims>.<mac>", base64url without padding.
func (s *Sealer) Seal(c Claims) string {
	if c.Nonce == "" {
		n := make([]byte, 12)
		_, _ = rand.Read(n)
		c.Nonce = base64.RawURLEncoding.EncodeToString(n)
	}
	body, _ := json.Marshal(c)
	b := base64.RawURLEncoding.EncodeToString(body)
	return StatePrefix + b + "." + base64.RawURLEncoding.EncodeToString(s.mac(b))
}

func (s *Sealer) mac(body string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(StatePrefix))
	m.Write([]byte(body))
	return m.Sum(nil)
}

// Open verifies state and returns its claims. It fails with ErrStateInvalid
// when the MAC does not verify, the state is malformed or it is bound to
// another identity (who), and with ErrStateExpired (claims returned) when
// now is past the expiry.
func (s *Sealer) Open(state, who string, now time.Time) (Claims, error) {
	rest, ok := strings.CutPrefix(state, StatePrefix)
	if !ok {
		return Claims{}, fmt.Errorf("%w: wrong prefix", ErrStateInvalid)
	}
	body, macText, ok := strings.Cut(rest, ".")
	if !ok {
		return Claims{}, fmt.Errorf("%w: malformed", ErrStateInvalid)
	}
	mac, err := base64.RawURLEncoding.DecodeString(macText)
	if err != nil || !hmac.Equal(mac, s.mac(body)) {
		return Claims{}, fmt.Errorf("%w: signature does not verify", ErrStateInvalid)
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: malformed", ErrStateInvalid)
	}
	var c Claims
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || c.Approval == "" || c.Digest == "" {
		return Claims{}, fmt.Errorf("%w: malformed claims", ErrStateInvalid)
	}
	if !hmac.Equal([]byte(c.Who), []byte(who)) {
		return Claims{}, fmt.Errorf("%w: bound to another identity", ErrStateInvalid)
	}
	if now.Unix() > c.Exp {
		return c, ErrStateExpired
	}
	return c, nil
}
