package agents

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ErrInsufficientScope means the initiator's token is valid but lacks a
// scope the broker requires (HTTP 403 insufficient_scope).
var ErrInsufficientScope = errors.New("insufficient scope")

// ErrActorMismatch means the initiator's token names, in its RFC 8693
// act claim, another actor than the authenticated agent.
var ErrActorMismatch = errors.New("token was delegated to another actor")

// ErrUnknownIssuer means a token from an issuer the broker does not trust.
var ErrUnknownIssuer = errors.New("unknown token issuer")

// DefaultAlgorithms are accepted when an issuer lists none.
var DefaultAlgorithms = []string{"RS256", "ES256"}

// asymmetric is every signature algorithm an issuer may be allowed. HMAC
// (HS*) and "none" are absent on purpose: a verifier that holds only a
// public key must never accept a MAC keyed with it.
var asymmetric = map[string]jose.SignatureAlgorithm{
	"RS256": jose.RS256, "RS384": jose.RS384, "RS512": jose.RS512,
	"PS256": jose.PS256, "PS384": jose.PS384, "PS512": jose.PS512,
	"ES256": jose.ES256, "ES384": jose.ES384, "ES512": jose.ES512,
	"EdDSA": jose.EdDSA,
}

// ValidateAlgorithm reports whether alg may be allowed for an issuer.
func ValidateAlgorithm(alg string) error {
	if _, ok := asymmetric[alg]; !ok {
		return fmt.Errorf("algorithm %q is not allowed (asymmetric signatures only: RS*, PS*, ES*, EdDSA; never none or HS*)", alg)
	}
	return nil
}

// IssuerConfig is one trusted OIDC/OAuth 2.1 issuer of initiator tokens.
type IssuerConfig struct {
	// Issuer is the exact iss value.
	Issuer string
	// JWKSURL, if empty, is discovered from
	// Issuer/.well-known/openid-configuration.
	JWKSURL string
	// Audiences a token must name one of; empty means OIDCOptions.Audience.
	Audiences []string
	// Algorithms allowed for this issuer; empty means DefaultAlgorithms.
	Algorithms []string
	// SubjectClaim names the initiator (default "sub").
	SubjectClaim string
	// TenantClaim, if set, must be present and names the tenant.
	TenantClaim string
	// GroupsClaim names the initiator's groups (default "groups"; a list
	// or a space-separated string; absent means none).
	GroupsClaim string
	// Kind of the initiators this issuer vouches for (default user).
	Kind InitiatorKind
	// SubjectPrefix is put in front of the subject to make the initiator
	// ID ("okta:" makes User::"okta:alice"), so that two issuers cannot
	// name the same initiator.
	SubjectPrefix string
	// Tenants, if set, are the only tenants this issuer's TenantClaim may
	// name; a token naming another is refused.
	Tenants []string
	// AllowNoActor accepts tokens without an RFC 8693 act claim. Such a
	// token is a bearer token: any agent that holds it can act for its
	// initiator. By default the act claim is required and must name the
	// calling agent.
	AllowNoActor bool
}

// OIDCOptions configure initiator token validation.
type OIDCOptions struct {
	Issuers []IssuerConfig
	// Audience is the broker's resource identifier (RFC 8707), the
	// default audience of every issuer.
	Audience string
	// RequiredScopes must all be granted (scope or scp claim).
	RequiredScopes []string
	// DefaultTenant is used when an issuer has no TenantClaim.
	DefaultTenant string
	// HTTPClient fetches discovery documents and JWKS (default: 10 s timeout).
	HTTPClient *http.Client
	// Now is the clock (default time.Now); Leeway the allowed skew (default 30 s).
	Now    func() time.Time
	Leeway time.Duration
}

// Initiator is who a validated token was issued to.
type Initiator struct {
	ID     string
	Kind   InitiatorKind
	Tenant string
	Groups []string
	Issuer string
	Scopes []string
	// Actor is the act.sub the token was delegated to, if any.
	Actor string
}

// OIDC validates initiator access tokens against the JWKS of configured
// issuers. Keys are fetched lazily, cached, and refetched when a token
// names an unknown key ID (at most every 10 s per issuer). It is safe for
// concurrent use.
type OIDC struct {
	opts    OIDCOptions
	issuers map[string]*issuer
	algs    []jose.SignatureAlgorithm
}

type issuer struct {
	cfg  IssuerConfig
	algs []jose.SignatureAlgorithm

	mu      sync.Mutex
	keys    *jose.JSONWebKeySet
	fetched time.Time
}

const (
	jwksTTL        = 10 * time.Minute
	jwksMinRefresh = 10 * time.Second
	maxJWKSBytes   = 1 << 20
	maxTokenBytes  = 16 << 10
)

// NewOIDC checks the options and returns a validator. It does not fetch
// anything yet.
func NewOIDC(o OIDCOptions) (*OIDC, error) {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Leeway == 0 {
		o.Leeway = 30 * time.Second
	}
	v := &OIDC{opts: o, issuers: map[string]*issuer{}}
	var errs []error
	seen := map[jose.SignatureAlgorithm]bool{}
	for i, ic := range o.Issuers {
		if ic.Issuer == "" {
			errs = append(errs, fmt.Errorf("issuer %d: issuer URL required", i))
			continue
		}
		if _, dup := v.issuers[ic.Issuer]; dup {
			errs = append(errs, fmt.Errorf("issuer %s: listed twice", ic.Issuer))
			continue
		}
		if len(ic.Audiences) == 0 {
			if o.Audience == "" {
				errs = append(errs, fmt.Errorf("issuer %s: no audience (set the broker's resource)", ic.Issuer))
			}
			ic.Audiences = []string{o.Audience}
		}
		if len(ic.Algorithms) == 0 {
			ic.Algorithms = DefaultAlgorithms
		}
		if ic.SubjectClaim == "" {
			ic.SubjectClaim = "sub"
		}
		if ic.GroupsClaim == "" {
			ic.GroupsClaim = "groups"
		}
		if ic.Kind == "" {
			ic.Kind = InitiatorUser
		}
		is := &issuer{cfg: ic}
		for _, a := range ic.Algorithms {
			if err := ValidateAlgorithm(a); err != nil {
				errs = append(errs, fmt.Errorf("issuer %s: %w", ic.Issuer, err))
				continue
			}
			is.algs = append(is.algs, asymmetric[a])
			if !seen[asymmetric[a]] {
				seen[asymmetric[a]] = true
				v.algs = append(v.algs, asymmetric[a])
			}
		}
		v.issuers[ic.Issuer] = is
	}
	if len(v.issuers) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no issuers"))
	}
	return v, errors.Join(errs...)
}

// Issuers returns the trusted issuer URLs (for protected resource metadata).
func (o *OIDC) Issuers() []string {
	out := make([]string, 0, len(o.issuers))
	for _, ic := range o.opts.Issuers {
		out = append(out, ic.Issuer)
	}
	return out
}

// RequiredScopes returns the scopes every token must carry.
func (o *OIDC) RequiredScopes() []string { return o.opts.RequiredScopes }

type actClaim struct {
	Sub string `json:"sub"`
}

// Validate checks token (signature with the issuer's keys and an allowed
// algorithm, iss, aud, exp, nbf) and returns its initiator. If the token
// carries an RFC 8693 act claim, its sub must equal agent. Errors wrap
// ErrInvalidToken, ErrUnknownIssuer, ErrActorMismatch or
// ErrInsufficientScope.
func (o *OIDC) Validate(ctx context.Context, token, agent string) (Initiator, error) {
	if len(token) > maxTokenBytes {
		return Initiator{}, fmt.Errorf("%w: initiator token too large", ErrInvalidToken)
	}
	tok, err := jwt.ParseSigned(token, o.algs)
	if err != nil {
		return Initiator{}, fmt.Errorf("%w: initiator token: %v", ErrInvalidToken, err)
	}
	if len(tok.Headers) != 1 {
		return Initiator{}, fmt.Errorf("%w: initiator token: exactly one signature required", ErrInvalidToken)
	}
	var peek jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&peek); err != nil {
		return Initiator{}, fmt.Errorf("%w: initiator token claims: %v", ErrInvalidToken, err)
	}
	is, ok := o.issuers[peek.Issuer]
	if !ok {
		return Initiator{}, fmt.Errorf("%w: %w %q", ErrInvalidToken, ErrUnknownIssuer, truncateStr(peek.Issuer, 100))
	}
	h := tok.Headers[0]
	if !slices.Contains(is.algs, jose.SignatureAlgorithm(h.Algorithm)) {
		return Initiator{}, fmt.Errorf("%w: algorithm %q not allowed for issuer %s", ErrInvalidToken, h.Algorithm, is.cfg.Issuer)
	}
	keys, err := is.keysFor(ctx, o, h.KeyID)
	if err != nil {
		return Initiator{}, fmt.Errorf("%w: issuer %s keys: %v", ErrInvalidToken, is.cfg.Issuer, err)
	}
	var (
		std   jwt.Claims
		extra map[string]any
		vErr  error = errors.New("no matching key")
	)
	for _, k := range keys {
		if vErr = tok.Claims(k.Key, &std, &extra); vErr == nil {
			break
		}
	}
	if vErr != nil {
		return Initiator{}, fmt.Errorf("%w: initiator token signature: %v", ErrInvalidToken, vErr)
	}
	if std.Expiry == nil {
		return Initiator{}, fmt.Errorf("%w: initiator token has no exp", ErrInvalidToken)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{
		Issuer: is.cfg.Issuer, AnyAudience: is.cfg.Audiences, Time: o.opts.Now(),
	}, o.opts.Leeway); err != nil {
		return Initiator{}, fmt.Errorf("%w: initiator token: %v", ErrInvalidToken, err)
	}

	in := Initiator{Kind: is.cfg.Kind, Issuer: is.cfg.Issuer, Tenant: o.opts.DefaultTenant}
	sub, _ := extra[is.cfg.SubjectClaim].(string)
	if sub == "" {
		return Initiator{}, fmt.Errorf("%w: initiator token has no %s", ErrInvalidToken, is.cfg.SubjectClaim)
	}
	in.ID = is.cfg.SubjectPrefix + sub
	if c := is.cfg.TenantClaim; c != "" {
		t, _ := extra[c].(string)
		if t == "" {
			return Initiator{}, fmt.Errorf("%w: initiator token has no tenant claim %s", ErrInvalidToken, c)
		}
		if len(is.cfg.Tenants) > 0 && !slices.Contains(is.cfg.Tenants, t) {
			return Initiator{}, fmt.Errorf("%w: tenant %q is not one issuer %s may name", ErrInvalidToken, truncateStr(t, 100), is.cfg.Issuer)
		}
		in.Tenant = t
	}
	in.Groups = stringList(extra[is.cfg.GroupsClaim])
	if raw, present := extra["act"]; present {
		b, _ := json.Marshal(raw)
		var act actClaim
		if err := json.Unmarshal(b, &act); err != nil || act.Sub == "" {
			return Initiator{}, fmt.Errorf("%w: malformed act claim", ErrInvalidToken)
		}
		if act.Sub != agent {
			return Initiator{}, fmt.Errorf("%w: %w: act names %q, caller is %q", ErrInvalidToken, ErrActorMismatch,
				truncateStr(act.Sub, 200), agent)
		}
		in.Actor = act.Sub
	} else if !is.cfg.AllowNoActor {
		return Initiator{}, fmt.Errorf("%w: initiator token has no act claim naming the calling agent (RFC 8693); without one any agent holding it could act for %s", ErrInvalidToken, truncateStr(in.ID, 100))
	}
	in.Scopes = stringList(extra["scope"])
	if len(in.Scopes) == 0 {
		in.Scopes = stringList(extra["scp"])
	}
	for _, s := range o.opts.RequiredScopes {
		if !slices.Contains(in.Scopes, s) {
			return Initiator{}, fmt.Errorf("%w: scope %q not granted", ErrInsufficientScope, s)
		}
	}
	return in, nil
}

// keysFor returns the issuer's public keys that could have signed a token
// with kid (all keys when kid is empty), refreshing the set when kid is
// unknown or the cache is old.
func (is *issuer) keysFor(ctx context.Context, o *OIDC, kid string) ([]jose.JSONWebKey, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	now := o.opts.Now()
	pick := func() []jose.JSONWebKey {
		if is.keys == nil {
			return nil
		}
		var out []jose.JSONWebKey
		for _, k := range is.keys.Keys {
			if kid != "" && k.KeyID != kid {
				continue
			}
			if k.Use != "" && k.Use != "sig" {
				continue
			}
			switch k.Key.(type) { // public asymmetric keys only: never a symmetric secret
			case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
				out = append(out, k)
			}
		}
		return out
	}
	stale := is.keys == nil || now.Sub(is.fetched) > jwksTTL
	if !stale {
		if ks := pick(); len(ks) > 0 || now.Sub(is.fetched) < jwksMinRefresh {
			if len(ks) == 0 {
				return nil, fmt.Errorf("no key %q", kid)
			}
			return ks, nil
		}
	}
	set, err := o.fetchJWKS(ctx, is.cfg)
	if err != nil {
		if is.keys != nil { // keep serving the last good set
			if ks := pick(); len(ks) > 0 {
				return ks, nil
			}
		}
		return nil, err
	}
	is.keys, is.fetched = set, now
	if ks := pick(); len(ks) > 0 {
		return ks, nil
	}
	return nil, fmt.Errorf("no key %q", kid)
}

func (o *OIDC) fetchJWKS(ctx context.Context, ic IssuerConfig) (*jose.JSONWebKeySet, error) {
	u := ic.JWKSURL
	if u == "" {
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := o.getJSON(ctx, strings.TrimSuffix(ic.Issuer, "/")+"/.well-known/openid-configuration", &doc); err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
		if doc.Issuer != ic.Issuer {
			return nil, fmt.Errorf("discovery: document names issuer %q", doc.Issuer)
		}
		if doc.JWKSURI == "" {
			return nil, errors.New("discovery: no jwks_uri")
		}
		u = doc.JWKSURI
	}
	var set jose.JSONWebKeySet
	if err := o.getJSON(ctx, u, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	return &set, nil
}

func (o *OIDC) getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := o.opts.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func stringList(v any) []string {
	switch x := v.(type) {
	case string:
		return strings.Fields(x)
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func truncateStr(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
