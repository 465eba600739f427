// Package oidctest is an OIDC/OAuth 2.1 issuer for tests: it serves a
// discovery document and a JWKS on 127.0.0.1 and signs access tokens with
// RS256, or deliberately wrong ones (alg none, HMAC keyed with its own
// public key). It is imported only by tests.
package oidctest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is a running test issuer. URL is its iss value.
type Issuer struct {
	URL  string
	Kid  string
	key  *rsa.PrivateKey
	srv  *httptest.Server
	hits atomic.Int64
}

// NewIssuer starts an issuer on loopback; it stops when the test ends.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is := &Issuer{key: key, Kid: "test-key-1"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": is.URL, "jwks_uri": is.URL + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		is.hits.Add(1)
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
			Key: &key.PublicKey, KeyID: is.Kid, Algorithm: "RS256", Use: "sig"}}})
	})
	is.srv = httptest.NewServer(mux)
	is.URL = is.srv.URL
	t.Cleanup(is.srv.Close)
	return is
}

// JWKSFetches counts JWKS downloads.
func (is *Issuer) JWKSFetches() int64 { return is.hits.Load() }

// Claims returns a valid claim set for sub and audience aud (iss, iat,
// exp in 5 minutes); change it before signing.
func (is *Issuer) Claims(sub, aud string) map[string]any {
	now := time.Now()
	return map[string]any{"iss": is.URL, "sub": sub, "aud": aud, "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
}

// Token signs claims with RS256 and the issuer's key.
func (is *Issuer) Token(t testing.TB, claims map[string]any) string {
	t.Helper()
	return sign(t, jose.SigningKey{Algorithm: jose.RS256, Key: is.key}, is.Kid, claims)
}

// HMACWithPublicKey signs claims with HS256 keyed with the issuer's public
// key (DER), the algorithm-confusion forgery.
func (is *Issuer) HMACWithPublicKey(t testing.TB, claims map[string]any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&is.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return sign(t, jose.SigningKey{Algorithm: jose.HS256, Key: der}, is.Kid, claims)
}

// OtherKey signs claims with RS256 under the issuer's key ID but a key the
// issuer never published.
func (is *Issuer) OtherKey(t testing.TB, claims map[string]any) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return sign(t, jose.SigningKey{Algorithm: jose.RS256, Key: k}, is.Kid, claims)
}

func sign(t testing.TB, key jose.SigningKey, kid string, claims map[string]any) string {
	s, err := jose.NewSigner(key, (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
