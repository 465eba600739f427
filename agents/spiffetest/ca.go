// Package spiffetest is test infrastructure for SPIFFE identities: an
// in-memory certificate authority that issues X.509-SVIDs and JWT-SVIDs
// (including deliberately broken ones), and a fake SPIFFE Workload API served
// over a unix socket with the public go-spiffe proto package, so that the
// code under test always goes through workloadapi sources exactly as it does
// against a real SPIRE agent.
//
// It is imported only by tests. It never decides anything.
package spiffetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is an in-memory SPIFFE trust domain: one self-signed X.509 authority
// and one JWT signing key.
type CA struct {
	TD     spiffeid.TrustDomain
	Cert   *x509.Certificate
	key    crypto.Signer
	jwtKey *ecdsa.PrivateKey
	JWTKid string
	serial atomic.Int64
}

// NewCA returns a fresh authority for trust domain td ("example.org").
func NewCA(t testing.TB, td string) *CA {
	t.Helper()
	trust := spiffeid.RequireTrustDomainFromString(td)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(trust.IDString())
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "spiffetest CA " + td},
		URIs:                  []*url.URL{u},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	jk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{TD: trust, Cert: cert, key: key, jwtKey: jk, JWTKid: "kid-" + td}
	ca.serial.Store(1)
	return ca
}

// SVIDOption changes one property of an issued X.509-SVID, usually to break
// it for an adversarial test.
type SVIDOption func(*x509.Certificate)

// Validity sets the leaf's NotBefore and NotAfter.
func Validity(notBefore, notAfter time.Time) SVIDOption {
	return func(c *x509.Certificate) { c.NotBefore, c.NotAfter = notBefore, notAfter }
}

// NoURISAN issues a leaf without a URI SAN (not an SVID).
func NoURISAN() SVIDOption { return func(c *x509.Certificate) { c.URIs = nil } }

// LeafIsCA sets the CA flag on the leaf (forbidden for SVIDs).
func LeafIsCA() SVIDOption {
	return func(c *x509.Certificate) {
		c.IsCA, c.BasicConstraintsValid = true, true
		c.KeyUsage |= x509.KeyUsageCertSign
	}
}

// X509SVID issues a leaf for id ("spiffe://example.org/agent/a"), valid for
// an hour unless an option says otherwise. It is its own x509svid.Source.
func (ca *CA) X509SVID(t testing.TB, id string, opts ...SVIDOption) *x509svid.SVID {
	t.Helper()
	sid := spiffeid.RequireFromString(id)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(sid.String())
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(ca.serial.Add(1)),
		Subject:               pkix.Name{CommonName: sid.Path()},
		URIs:                  []*url.URL{u},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, o := range opts {
		o(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: sid, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// X509Bundle is the trust domain's X.509 bundle.
func (ca *CA) X509Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.TD, []*x509.Certificate{ca.Cert})
}

// JWTBundle is the trust domain's JWT bundle.
func (ca *CA) JWTBundle() *jwtbundle.Bundle {
	return jwtbundle.FromJWTAuthorities(ca.TD, map[string]crypto.PublicKey{ca.JWTKid: ca.jwtKey.Public()})
}

// JWTOption changes the claims of an issued JWT-SVID.
type JWTOption func(map[string]any)

// Expiry sets exp.
func Expiry(t time.Time) JWTOption { return func(c map[string]any) { c["exp"] = t.Unix() } }

// Claim sets an extra claim.
func Claim(name string, v any) JWTOption { return func(c map[string]any) { c[name] = v } }

// JWTSVID signs a JWT-SVID for sub with the given audiences (ES256, 5
// minute lifetime unless an option says otherwise).
func (ca *CA) JWTSVID(t testing.TB, sub string, aud []string, opts ...JWTOption) string {
	t.Helper()
	tok, err := ca.signJWT(sub, aud, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (ca *CA) signJWT(sub string, aud []string, opts ...JWTOption) (string, error) {
	claims := map[string]any{
		"sub": sub, "aud": aud,
		"iat": time.Now().Unix(), "exp": time.Now().Add(5 * time.Minute).Unix(),
	}
	for _, o := range opts {
		o(claims)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: ca.jwtKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", ca.JWTKid))
	if err != nil {
		return "", err
	}
	return jwt.Signed(s).Claims(claims).Serialize()
}

// UnsignedJWT builds a token with header {"alg":"none"} (and kid) and no
// signature, the classic forgery.
func UnsignedJWT(kid string, claims map[string]any) string {
	h, _ := json.Marshal(map[string]any{"alg": "none", "typ": "JWT", "kid": kid})
	c, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc(h) + "." + enc(c) + "."
}

// ReplaceJWTClaims keeps a token's header and signature but swaps its
// claims: the signature no longer matches.
func ReplaceJWTClaims(tok string, claims map[string]any) string {
	p := strings.Split(tok, ".")
	c, _ := json.Marshal(claims)
	return p[0] + "." + base64.RawURLEncoding.EncodeToString(c) + "." + p[2]
}
