package agents

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// InitiatorTokenHeader carries the initiator's access token when the
// Authorization header is taken by the agent's own JWT-SVID.
const InitiatorTokenHeader = "X-Initiator-Token"

// SPIFFEOptions configure the SPIFFE authenticator.
type SPIFFEOptions struct {
	// TrustDomains whose workloads may act as agents. Required.
	TrustDomains []spiffeid.TrustDomain
	// X509Bundles verify client X.509-SVIDs (in the handshake and again on
	// every request, so an SVID that expires on a kept-alive connection
	// stops working). Required.
	X509Bundles x509bundle.Source
	// JWTBundles verify JWT-SVID bearer tokens; nil accepts only mTLS.
	JWTBundles jwtbundle.Source
	// Audience a JWT-SVID must carry (usually the broker's SPIFFE ID).
	Audience string
	// Initiators validates initiator tokens; nil accepts none.
	Initiators *OIDC
	// RequireInitiator refuses a request without an initiator token.
	// Otherwise the agent acts for itself (a workload initiator).
	RequireInitiator bool
	// DefaultTenant is the tenant of a workload initiator.
	DefaultTenant string
}

// SPIFFE authenticates agents by SPIFFE identity: the peer X.509-SVID of an
// mTLS connection, or a JWT-SVID bearer token for the broker's audience. The
// initiator comes from an OIDC access token (Initiators). It implements the
// broker's Authenticator.
type SPIFFE struct {
	o SPIFFEOptions
}

// NewSPIFFE checks the options and returns the authenticator.
func NewSPIFFE(o SPIFFEOptions) (*SPIFFE, error) {
	var errs []error
	if len(o.TrustDomains) == 0 {
		errs = append(errs, errors.New("at least one trust domain is required"))
	}
	if o.X509Bundles == nil {
		errs = append(errs, errors.New("X.509 bundles are required"))
	}
	if o.JWTBundles != nil && o.Audience == "" {
		errs = append(errs, errors.New("a JWT-SVID audience is required"))
	}
	if o.RequireInitiator && o.Initiators == nil {
		errs = append(errs, errors.New("initiator tokens are required but no issuer is configured"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &SPIFFE{o: o}, nil
}

// Authorizer admits peers from the configured trust domains. It runs inside
// the TLS handshake; tlsconfig has already verified the chain.
func (s *SPIFFE) Authorizer() tlsconfig.Authorizer {
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if !slices.Contains(s.o.TrustDomains, id.TrustDomain()) {
			return fmt.Errorf("%w: trust domain %q is not accepted", ErrInvalidToken, id.TrustDomain())
		}
		return nil
	}
}

// ServerTLSConfig is the broker's TLS server configuration: its own SVID
// as server certificate, client X.509-SVIDs verified against the bundles
// and admitted by Authorizer. Session tickets are off, because a resumed
// session skips the verification. With JWT-SVIDs enabled a client may
// present no certificate (and must then send a JWT-SVID); a certificate it
// does present is verified all the same. onReject, if set, is told about
// every refused client certificate.
func (s *SPIFFE) ServerTLSConfig(svid x509svid.Source, onReject func(error)) *tls.Config {
	cfg := tlsconfig.MTLSServerConfig(svid, s.o.X509Bundles, s.Authorizer())
	cfg.SessionTicketsDisabled = true
	cfg.MinVersion = tls.VersionTLS12
	verify := cfg.VerifyPeerCertificate
	optional := s.o.JWTBundles != nil
	if optional {
		cfg.ClientAuth = tls.RequestClientCert
	}
	cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if len(raw) == 0 && optional {
			return nil
		}
		err := verify(raw, chains)
		if err != nil && onReject != nil {
			onReject(err)
		}
		return err
	}
	return cfg
}

// Authenticate returns the identity of an HTTP request. The agent is the
// peer X.509-SVID, or else the JWT-SVID in Authorization; the initiator is
// the access token in Authorization (mTLS) or X-Initiator-Token
// (JWT-SVID). Errors wrap ErrUnauthenticated, ErrInvalidToken or
// ErrInsufficientScope.
func (s *SPIFFE) Authenticate(r *http.Request) (Identity, error) {
	bearer, err := bearerToken(r.Header.Get("Authorization"))
	if err != nil {
		return Identity{}, err
	}
	var (
		id       Identity
		initTok  string
		haveCert = r.TLS != nil && len(r.TLS.PeerCertificates) > 0
	)
	switch {
	case haveCert:
		agent, err := s.verifyCert(r.TLS.PeerCertificates)
		if err != nil {
			return Identity{}, err
		}
		id.Agent, id.Method = agent.String(), "x509-svid"
		initTok = bearer
		if initTok == "" {
			initTok, _ = bearerToken("Bearer " + r.Header.Get(InitiatorTokenHeader))
		}
	case s.o.JWTBundles != nil && bearer != "":
		agent, err := s.verifyJWT(bearer)
		if err != nil {
			return Identity{}, err
		}
		id.Agent, id.Method = agent.String(), "jwt-svid"
		initTok = strings.TrimSpace(r.Header.Get(InitiatorTokenHeader))
	default:
		return Identity{}, fmt.Errorf("%w: no client X.509-SVID and no JWT-SVID", ErrUnauthenticated)
	}

	if initTok == "" || s.o.Initiators == nil {
		if initTok != "" {
			return Identity{}, fmt.Errorf("%w: an initiator token was sent but no issuer is configured", ErrInvalidToken)
		}
		if s.o.RequireInitiator {
			return Identity{}, fmt.Errorf("%w: initiator access token required", ErrUnauthenticated)
		}
		id.Initiator, id.InitiatorKind, id.Tenant = id.Agent, InitiatorWorkload, s.o.DefaultTenant
		return id, nil
	}
	in, err := s.o.Initiators.Validate(r.Context(), initTok, id.Agent)
	if err != nil {
		return Identity{}, err
	}
	id.Initiator, id.InitiatorKind, id.Tenant, id.Groups = in.ID, in.Kind, in.Tenant, in.Groups
	id.Method += "+oidc"
	return id, nil
}

func (s *SPIFFE) verifyCert(certs []*x509.Certificate) (spiffeid.ID, error) {
	id, _, err := x509svid.Verify(certs, s.o.X509Bundles)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: client X.509-SVID: %v", ErrInvalidToken, err)
	}
	if err := s.Authorizer()(id, nil); err != nil {
		return spiffeid.ID{}, err
	}
	return id, nil
}

func (s *SPIFFE) verifyJWT(tok string) (spiffeid.ID, error) {
	if len(tok) > maxTokenBytes {
		return spiffeid.ID{}, fmt.Errorf("%w: JWT-SVID too large", ErrInvalidToken)
	}
	svid, err := jwtsvid.ParseAndValidate(tok, s.o.JWTBundles, []string{s.o.Audience})
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: JWT-SVID: %v", ErrInvalidToken, err)
	}
	if err := s.Authorizer()(svid.ID, nil); err != nil {
		return spiffeid.ID{}, err
	}
	return svid.ID, nil
}

// bearerToken returns the token of an Authorization header value, "" when
// the header is empty, and an error for any other scheme.
func bearerToken(h string) (string, error) {
	h = strings.TrimSpace(h)
	if h == "" || strings.EqualFold(h, "Bearer") {
		return "", nil
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", fmt.Errorf("%w: authorization header is not a bearer token", ErrInvalidToken)
	}
	return strings.TrimSpace(tok), nil
}
