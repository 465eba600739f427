package agents

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
)

// ChainClaims is what a chain token asserts: a call forwarded by the broker
// to a downstream that is itself an agent (Target) was made for Initiator
// under Task, by the agents in Chain (outermost first, the calling agent
// last). The target, connecting back with the token, acts as a child: same
// initiator, chain + itself, inside the task.
type ChainClaims struct {
	Task          string        `json:"task,omitempty"`
	Initiator     string        `json:"ini"`
	InitiatorKind InitiatorKind `json:"ik"`
	Tenant        string        `json:"ten,omitempty"`
	Groups        []string      `json:"grp,omitempty"`
	Chain         []string      `json:"chain"`
	Target        string        `json:"aud"`
	ParentCall    string        `json:"call"`
	Expires       int64         `json:"exp"`
	Nonce         string        `json:"n"`
}

// Chains mints and verifies chain tokens. A token is HMAC-sealed with a
// key that never leaves the process, bound to its target agent, short-lived,
// and valid only while the call it was minted for is in flight: once that
// call returns, Release makes it worthless, so it cannot be replayed after
// its parent ended.
type Chains struct {
	key  []byte
	mu   sync.Mutex
	live map[string]time.Time // nonce -> expiry
}

// NewChains returns a minter with a fresh random key.
func NewChains() *Chains {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return &Chains{key: k, live: map[string]time.Time{}}
}

const chainPrefix = "mcpbc1."

// Mint returns a token for c valid for ttl, and the func that ends it (call
// it when the parent call returns).
func (cs *Chains) Mint(c ChainClaims, ttl time.Duration, now time.Time) (string, func()) {
	var n [12]byte
	_, _ = rand.Read(n[:])
	c.Nonce = hex.EncodeToString(n[:])
	exp := now.Add(ttl)
	c.Expires = exp.Unix()
	body, _ := json.Marshal(c)
	m := hmac.New(sha256.New, cs.key)
	m.Write(body)
	tok := chainPrefix + base64.RawURLEncoding.EncodeToString(body) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	cs.mu.Lock()
	cs.live[c.Nonce] = exp
	for k, e := range cs.live { // keep the map small
		if now.After(e) {
			delete(cs.live, k)
		}
	}
	cs.mu.Unlock()
	return tok, func() {
		cs.mu.Lock()
		delete(cs.live, c.Nonce)
		cs.mu.Unlock()
	}
}

// Verify checks a token presented by agent presenter.
func (cs *Chains) Verify(tok, presenter string, now time.Time) (ChainClaims, error) {
	var c ChainClaims
	rest, ok := strings.CutPrefix(tok, chainPrefix)
	if !ok {
		return c, fmt.Errorf("%w: not a chain token", ErrChainToken)
	}
	b64, mac64, ok := strings.Cut(rest, ".")
	if !ok {
		return c, fmt.Errorf("%w: malformed", ErrChainToken)
	}
	body, err1 := base64.RawURLEncoding.DecodeString(b64)
	mac, err2 := base64.RawURLEncoding.DecodeString(mac64)
	if err1 != nil || err2 != nil {
		return c, fmt.Errorf("%w: malformed", ErrChainToken)
	}
	m := hmac.New(sha256.New, cs.key)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), mac) {
		return c, fmt.Errorf("%w: bad signature", ErrChainToken)
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return c, fmt.Errorf("%w: malformed claims", ErrChainToken)
	}
	if c.Target != presenter {
		return c, fmt.Errorf("%w: minted for %s, presented by %s", ErrChainToken, c.Target, presenter)
	}
	if now.Unix() > c.Expires {
		return c, fmt.Errorf("%w: expired", ErrChainToken)
	}
	cs.mu.Lock()
	_, live := cs.live[c.Nonce]
	cs.mu.Unlock()
	if !live {
		return c, fmt.Errorf("%w: its parent call has ended", ErrChainToken)
	}
	return c, nil
}
