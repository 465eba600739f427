package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mcpbroker/mcpbroker/agents"
	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/tools"
)

// SPIFFEIdentityConfig is identity.spiffe: where the broker gets its own
// SVID and the trust bundles, and which agents it admits.
type SPIFFEIdentityConfig struct {
	// WorkloadAPI is the SPIFFE Workload API address
	// ("unix:///run/spire/agent/public/api.sock"); empty means the
	// SPIFFE_ENDPOINT_SOCKET environment variable. Ignored when SVIDCert
	// and Bundles are set (offline mode).
	WorkloadAPI string `yaml:"workload_api"`
	// TrustDomains whose workloads may act as agents ("example.org").
	TrustDomains []string `yaml:"trust_domains"`
	// JWTSVID also admits agents presenting a JWT-SVID bearer token for
	// JWTAudience; client certificates then become optional.
	JWTSVID bool `yaml:"jwt_svid"`
	// JWTAudience defaults to the broker's own SPIFFE ID.
	JWTAudience string `yaml:"jwt_audience"`
	// FetchTimeout bounds the wait for the first SVID at start (default 30s).
	FetchTimeout Duration `yaml:"fetch_timeout"`
	// SVIDCert, SVIDKey and Bundles configure offline mode, for hosts
	// without a Workload API: PEM files, loaded once at start.
	SVIDCert string       `yaml:"svid_cert"`
	SVIDKey  string       `yaml:"svid_key"`
	Bundles  []BundleFile `yaml:"bundles"`
}

// BundleFile is one trust domain's bundle on disk (spire-server bundle show
// writes the PEM; -format jwks... the JWKS).
type BundleFile struct {
	TrustDomain string `yaml:"trust_domain"`
	X509        string `yaml:"x509"` // PEM
	JWT         string `yaml:"jwt"`  // JWKS, optional
}

// OIDCIdentityConfig is identity.oidc: who may vouch for initiators.
type OIDCIdentityConfig struct {
	// Resource is the broker's resource URL ("https://broker.example/mcp"):
	// the audience initiator tokens must carry (RFC 8707) and the resource
	// in the protected resource metadata (RFC 9728).
	Resource string `yaml:"resource"`
	// Required refuses requests without an initiator token; otherwise such
	// a request acts for the agent itself (a workload initiator).
	Required       bool               `yaml:"required"`
	RequiredScopes []string           `yaml:"required_scopes"`
	Issuers        []OIDCIssuerConfig `yaml:"issuers"`
}

// OIDCIssuerConfig is one trusted issuer.
type OIDCIssuerConfig struct {
	Issuer       string   `yaml:"issuer"`
	JWKSURL      string   `yaml:"jwks_url"`
	Audiences    []string `yaml:"audiences"`
	Algorithms   []string `yaml:"algorithms"`
	SubjectClaim string   `yaml:"subject_claim"`
	TenantClaim  string   `yaml:"tenant_claim"`
	GroupsClaim  string   `yaml:"groups_claim"`
	// Kind is user (default) or workload.
	Kind string `yaml:"kind"`
	// SubjectPrefix goes in front of the subject to make the initiator ID
	// ("okta:" makes User::"okta:alice"). With more than one issuer, each
	// needs its own, so that no issuer can name another's initiators.
	SubjectPrefix string `yaml:"subject_prefix"`
	// Tenants are the tenants this issuer's tenant_claim may name (others
	// are refused). With more than one issuer, every issuer with a
	// tenant_claim must list them.
	Tenants []string `yaml:"tenants"`
	// AllowMissingActor accepts tokens without an RFC 8693 act claim
	// naming the calling agent: bearer tokens any agent holding one could
	// present. Off by default.
	AllowMissingActor bool `yaml:"allow_missing_actor"`
}

func (ic *IdentityConfig) offline() bool { return ic.SPIFFE.SVIDCert != "" }

// validateSPIFFE reports every problem of a spiffe-mode identity section.
func (ic *IdentityConfig) validateSPIFFE() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	sc, oc := ic.SPIFFE, ic.OIDC
	if len(sc.TrustDomains) == 0 {
		add("identity.spiffe.trust_domains: at least one trust domain is required")
	}
	for i, td := range sc.TrustDomains {
		if _, err := spiffeid.TrustDomainFromString(td); err != nil || strings.Contains(td, "/") {
			add("identity.spiffe.trust_domains[%d]: %q is not a trust domain name", i, td)
		}
	}
	if (sc.SVIDCert == "") != (sc.SVIDKey == "") {
		add("identity.spiffe: svid_cert and svid_key go together")
	}
	if sc.SVIDCert != "" && len(sc.Bundles) == 0 {
		add("identity.spiffe.bundles: required with svid_cert (offline mode)")
	}
	if sc.SVIDCert == "" && len(sc.Bundles) > 0 {
		add("identity.spiffe.bundles: only with svid_cert/svid_key (offline mode); the Workload API serves bundles otherwise")
	}
	for i, b := range sc.Bundles {
		if _, err := spiffeid.TrustDomainFromString(b.TrustDomain); err != nil {
			add("identity.spiffe.bundles[%d].trust_domain: %q is not a trust domain name", i, b.TrustDomain)
		}
		if b.X509 == "" {
			add("identity.spiffe.bundles[%d].x509: a PEM bundle file is required", i)
		}
		if sc.JWTSVID && b.JWT == "" {
			add("identity.spiffe.bundles[%d].jwt: a JWKS file is required with jwt_svid", i)
		}
	}
	if sc.WorkloadAPI != "" {
		if err := workloadapi.ValidateAddress(sc.WorkloadAPI); err != nil {
			add("identity.spiffe.workload_api: %v", err)
		}
	}
	if sc.JWTAudience != "" && !sc.JWTSVID {
		add("identity.spiffe.jwt_audience: set jwt_svid: true to accept JWT-SVIDs")
	}
	if ic.DefaultAgent != "" || len(ic.Tokens) > 0 {
		add("identity: default_agent and tokens are dev-mode settings; in spiffe mode agents prove who they are")
	}
	if len(oc.Issuers) == 0 {
		if oc.Required {
			add("identity.oidc.required: no issuers configured")
		}
		return errs
	}
	if !strings.HasPrefix(oc.Resource, "https://") {
		add("identity.oidc.resource: %q must be the broker's https:// resource URL", oc.Resource)
	}
	for i, is := range oc.Issuers {
		w := fmt.Sprintf("identity.oidc.issuers[%d]", i)
		if !secureURL(is.Issuer) {
			add("%s.issuer: %q must be an https:// URL (http:// only on loopback)", w, is.Issuer)
		}
		if is.JWKSURL != "" && !secureURL(is.JWKSURL) {
			add("%s.jwks_url: %q must be an https:// URL (http:// only on loopback)", w, is.JWKSURL)
		}
		for _, a := range is.Algorithms {
			if err := agents.ValidateAlgorithm(a); err != nil {
				add("%s.algorithms: %v", w, err)
			}
		}
		switch is.Kind {
		case "", "user", "workload":
		default:
			add("%s.kind: %q is not user or workload", w, is.Kind)
		}
		if len(is.Tenants) > 0 && is.TenantClaim == "" {
			add("%s.tenants: set tenant_claim too (without it every initiator is in the default tenant)", w)
		}
		if len(oc.Issuers) > 1 {
			if is.TenantClaim != "" && len(is.Tenants) == 0 {
				add("%s.tenants: required with more than one issuer, so that no issuer can name another's tenants", w)
			}
			for j := range i {
				if oc.Issuers[j].SubjectPrefix == is.SubjectPrefix {
					add("%s.subject_prefix: %q is also issuers[%d]'s: with more than one issuer each needs its own, so that no issuer can name another's initiators", w, is.SubjectPrefix, j)
				}
			}
		}
	}
	return errs
}

func secureURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return false
	}
	return u.Scheme == "https" || (u.Scheme == "http" && isLoopbackHost(u.Hostname()))
}

// validateServerIdentity checks a server's spiffe_id and jwt_audience.
func (c *Config) validateServerIdentity(where string, s ServerConfig) []error {
	var errs []error
	if s.ForwardAgentToken {
		errs = append(errs, fmt.Errorf("%s.forward_agent_token: the agent's token is never forwarded (MCP forbids token passthrough); give the server spiffe_id or jwt_audience so the broker calls it with its own identity", where))
	}
	if s.SPIFFEID == "" && s.JWTAudience == "" {
		return errs
	}
	if c.Identity.Mode != "spiffe" {
		errs = append(errs, fmt.Errorf("%s: spiffe_id and jwt_audience need identity.mode spiffe (the broker's own SVID)", where))
	}
	if s.SPIFFEID != "" {
		if err := ValidateSPIFFEID(s.SPIFFEID); err != nil {
			errs = append(errs, fmt.Errorf("%s.spiffe_id: %w", where, err))
		}
		if !strings.HasPrefix(s.URL, "https://") {
			errs = append(errs, fmt.Errorf("%s.spiffe_id: the url must be https:// for mTLS", where))
		}
	}
	if s.JWTAudience != "" {
		if _, ok := s.Headers["Authorization"]; ok {
			errs = append(errs, fmt.Errorf("%s: jwt_audience and an Authorization header are exclusive", where))
		}
	}
	return errs
}

// spiffeIdentity is what spiffe mode holds for the broker's lifetime: the
// sources (Workload API or files), the authenticator and the TLS config.
type spiffeIdentity struct {
	id      spiffeid.ID
	svid    x509svid.Source
	x509    x509bundle.Source
	jwt     jwtbundle.Source
	jwtSrc  *workloadapi.JWTSource // nil offline: no JWT-SVIDs to mint
	x509Src *workloadapi.X509Source
	auth    *agents.SPIFFE
	oidc    *agents.OIDC
	tls     *tls.Config
	res     string

	mu      sync.Mutex
	lastErr map[string]string // server -> last recorded downstream refusal
}

// setupSPIFFE builds the spiffe-mode identity stage. The first SVID is
// awaited for at most fetch_timeout: a broker without an identity does not
// start.
func (b *Broker) setupSPIFFE() error {
	ic := b.cfg.Identity
	sc := ic.SPIFFE
	si := &spiffeIdentity{lastErr: map[string]string{}, res: ic.OIDC.Resource}
	b.spiffe = si
	if ic.offline() {
		svid, err := x509svid.Load(sc.SVIDCert, sc.SVIDKey)
		if err != nil {
			return fmt.Errorf("identity.spiffe.svid_cert: %w", err)
		}
		xs, js := x509bundle.NewSet(), jwtbundle.NewSet()
		for _, bf := range sc.Bundles {
			td := spiffeid.RequireTrustDomainFromString(bf.TrustDomain)
			xb, err := x509bundle.Load(td, bf.X509)
			if err != nil {
				return fmt.Errorf("identity.spiffe.bundles %s: %w", bf.TrustDomain, err)
			}
			xs.Add(xb)
			if bf.JWT != "" {
				jb, err := jwtbundle.Load(td, bf.JWT)
				if err != nil {
					return fmt.Errorf("identity.spiffe.bundles %s: %w", bf.TrustDomain, err)
				}
				js.Add(jb)
			}
		}
		si.id, si.svid, si.x509, si.jwt = svid.ID, svid, xs, js
	} else {
		timeout := time.Duration(sc.FetchTimeout)
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var copts []workloadapi.ClientOption
		if sc.WorkloadAPI != "" {
			copts = append(copts, workloadapi.WithAddr(sc.WorkloadAPI))
		}
		client, err := workloadapi.New(ctx, copts...)
		if err != nil {
			return fmt.Errorf("spiffe workload api: %w", err)
		}
		xsrc, err := workloadapi.NewX509Source(ctx, workloadapi.WithClient(client))
		if err != nil {
			_ = client.Close()
			return fmt.Errorf("spiffe workload api: no X.509-SVID for the broker within %s (is it registered?): %w", timeout, err)
		}
		si.x509Src = xsrc
		jsrc, err := workloadapi.NewJWTSource(ctx, workloadapi.WithClient(client))
		if err != nil {
			return fmt.Errorf("spiffe workload api: JWT bundles: %w", err)
		}
		si.jwtSrc = jsrc
		svid, err := xsrc.GetX509SVID()
		if err != nil {
			return fmt.Errorf("spiffe workload api: %w", err)
		}
		si.id, si.svid, si.x509, si.jwt = svid.ID, xsrc, xsrc, jsrc
	}

	var tds []spiffeid.TrustDomain
	for _, td := range sc.TrustDomains {
		tds = append(tds, spiffeid.RequireTrustDomainFromString(td))
	}
	opts := agents.SPIFFEOptions{TrustDomains: tds, X509Bundles: si.x509, DefaultTenant: ic.DefaultTenant,
		RequireInitiator: ic.OIDC.Required}
	if sc.JWTSVID {
		opts.JWTBundles, opts.Audience = si.jwt, sc.JWTAudience
		if opts.Audience == "" {
			opts.Audience = si.id.String()
		}
	}
	if len(ic.OIDC.Issuers) > 0 {
		var iss []agents.IssuerConfig
		for _, is := range ic.OIDC.Issuers {
			iss = append(iss, agents.IssuerConfig{Issuer: is.Issuer, JWKSURL: is.JWKSURL, Audiences: is.Audiences,
				Algorithms: is.Algorithms, SubjectClaim: is.SubjectClaim, TenantClaim: is.TenantClaim,
				GroupsClaim: is.GroupsClaim, Kind: agents.InitiatorKind(is.Kind), SubjectPrefix: is.SubjectPrefix, Tenants: is.Tenants, AllowNoActor: is.AllowMissingActor})
		}
		o, err := agents.NewOIDC(agents.OIDCOptions{Issuers: iss, Audience: ic.OIDC.Resource,
			RequiredScopes: ic.OIDC.RequiredScopes, DefaultTenant: ic.DefaultTenant})
		if err != nil {
			return fmt.Errorf("identity.oidc: %w", err)
		}
		si.oidc, opts.Initiators = o, o
	}
	auth, err := agents.NewSPIFFE(opts)
	if err != nil {
		return fmt.Errorf("identity.spiffe: %w", err)
	}
	si.auth, b.auth = auth, auth
	si.tls = auth.ServerTLSConfig(si.svid, func(err error) {
		// Before authentication, like every other refusal there: rate
		// limited, so a flood of bad handshakes cannot flood the ledger.
		b.recordPreAuth(context.Background(), audit.Event{Type: audit.AuthFailed, Decision: audit.DecisionDeny,
			Reason: string(ReasonUnauthenticated), Detail: truncate("tls: "+err.Error(), 300)})
		b.log.Debug("client certificate refused", "err", err)
	})
	b.log.Info("SPIFFE identity mode", "broker_id", si.id.String(), "trust_domains", sc.TrustDomains,
		"jwt_svid", sc.JWTSVID, "oidc_issuers", len(ic.OIDC.Issuers), "offline", ic.offline())
	return nil
}

// closeIdentity closes the Workload API sources (after the pool: the
// downstream connections use the SVID).
func (b *Broker) closeIdentity() {
	if b.spiffe == nil {
		return
	}
	if b.spiffe.jwtSrc != nil {
		_ = b.spiffe.jwtSrc.Close()
	}
	if b.spiffe.x509Src != nil {
		_ = b.spiffe.x509Src.Close()
	}
}

// scheme is https in spiffe mode, http otherwise.
func (b *Broker) scheme() string {
	if b.spiffe != nil {
		return "https"
	}
	return "http"
}

// downstreamIdentity gives sp the broker's own credentials for server s:
// mTLS that only completes with a server presenting s.SPIFFEID, and/or a
// JWT-SVID for s.JWTAudience minted per request. A refused server is
// recorded once per distinct error.
func (b *Broker) downstreamIdentity(sp *tools.Spec, s ServerConfig) error {
	si := b.spiffe
	if si == nil || (s.SPIFFEID == "" && s.JWTAudience == "") {
		return nil
	}
	if s.SPIFFEID != "" {
		want := spiffeid.RequireFromString(s.SPIFFEID)
		cfg := tlsconfig.MTLSClientConfig(si.svid, si.x509, tlsconfig.AuthorizeID(want))
		verify := cfg.VerifyPeerCertificate
		cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			err := verify(raw, chains)
			if err != nil {
				b.downstreamRefused(s.Name, err)
			}
			return err
		}
		sp.TLS = cfg
	}
	if s.JWTAudience != "" {
		if si.jwtSrc == nil {
			return fmt.Errorf("servers %s: jwt_audience needs the Workload API (offline mode cannot mint JWT-SVIDs)", s.Name)
		}
		aud := s.JWTAudience
		sp.HeaderFunc = func(ctx context.Context) map[string]string {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			tok, err := si.jwtSrc.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud})
			if err != nil {
				b.log.Warn("could not mint a JWT-SVID for a downstream server", "server", s.Name, "err", err)
				return nil
			}
			return map[string]string{"Authorization": "Bearer " + tok.Marshal()}
		}
	}
	return nil
}

func (b *Broker) downstreamRefused(server string, err error) {
	msg := truncate(err.Error(), 300)
	b.log.Warn("downstream server refused: unexpected identity", "server", server, "err", err)
	b.spiffe.mu.Lock()
	dup := b.spiffe.lastErr[server] == msg
	b.spiffe.lastErr[server] = msg
	b.spiffe.mu.Unlock()
	if !dup {
		b.record(context.Background(), audit.Event{Type: audit.RequestRejected, Server: server, Decision: audit.DecisionDeny,
			Reason: string(ReasonToolUnavailable), Detail: "downstream identity refused: " + msg})
	}
}

// prmPath is the RFC 9728 protected resource metadata path.
const prmPath = "/.well-known/oauth-protected-resource"

// metadataURL is where the resource's metadata lives (RFC 9728 §3.1: the
// well-known path inserted before the resource's path).
func (si *spiffeIdentity) metadataURL() string {
	u, err := url.Parse(si.res)
	if err != nil {
		return ""
	}
	u.Path = prmPath + strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// routeIdentity serves the protected resource metadata when initiators
// come from OAuth issuers.
func (b *Broker) routeIdentity(mux *http.ServeMux) {
	if b.spiffe == nil || b.spiffe.oidc == nil {
		return
	}
	h := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=300")
		doc := map[string]any{
			"resource":                 b.spiffe.res,
			"authorization_servers":    b.spiffe.oidc.Issuers(),
			"bearer_methods_supported": []string{"header"},
			"resource_name":            "mcpbroker",
		}
		if s := b.spiffe.oidc.RequiredScopes(); len(s) > 0 {
			doc["scopes_supported"] = s
		}
		_ = json.NewEncoder(w).Encode(doc)
	}
	mux.HandleFunc("GET "+prmPath, h)
	if u, err := url.Parse(b.spiffe.res); err == nil && u.Path != "" && u.Path != "/" {
		mux.HandleFunc("GET "+prmPath+strings.TrimSuffix(u.Path, "/"), h) // RFC 9728 §3.1
	}
}

// challenge answers a failed authentication: 403 insufficient_scope when
// the token is good but short of scopes, otherwise 401 with a Bearer
// challenge pointing at the protected resource metadata (MCP
// authorization, RFC 9728 §5.1).
func (b *Broker) challenge(w http.ResponseWriter, r *http.Request, err error) {
	params := []string{`realm="mcpbroker"`}
	if b.spiffe != nil && b.spiffe.oidc != nil {
		params = append(params, fmt.Sprintf(`resource_metadata="%s"`, b.spiffe.metadataURL()))
	}
	if errors.Is(err, agents.ErrInsufficientScope) {
		params = append(params, `error="insufficient_scope"`)
		if s := b.spiffe.oidc.RequiredScopes(); len(s) > 0 {
			params = append(params, fmt.Sprintf(`scope="%s"`, strings.Join(s, " ")))
		}
		w.Header().Set("WWW-Authenticate", "Bearer "+strings.Join(params, ", "))
		writeRPCError(w, http.StatusForbidden, nil, mcp.INVALID_REQUEST, "insufficient scope")
		return
	}
	if errors.Is(err, agents.ErrInvalidToken) {
		params = append(params, `error="invalid_token"`)
	}
	w.Header().Set("WWW-Authenticate", "Bearer "+strings.Join(params, ", "))
	writeRPCError(w, http.StatusUnauthorized, nil, mcp.INVALID_REQUEST, "authentication required")
}
