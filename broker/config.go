package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/server"

	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"
)

// Config is the broker's whole configuration. The zero value is not usable:
// start from Defaults (or DemoConfig), decode a file over it with
// LoadConfig, then Validate. Only cmd/ reads flags and environment; Config
// holds references (env var names, file paths) to secrets, never secrets.
type Config struct {
	// Listen is the host:port of the streamable HTTP endpoint, served at /mcp.
	Listen string `yaml:"listen"`
	// DataDir holds the bbolt file, the audit key and the admin socket.
	DataDir string `yaml:"data_dir"`
	// Policies is a directory of operator .cedar files, loaded next to the
	// embedded baseline.
	Policies string `yaml:"policies"`
	// CandidatePolicies is a directory of .cedar files evaluated next to the
	// live set on every call and never enforced (log-only rollout of a whole
	// set): decision records show what it would have decided.
	CandidatePolicies string `yaml:"candidate_policies"`
	// MaxBodyBytes caps an HTTP request body (default 4 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxAnswerBytes caps a downstream's answer: a streamable HTTP answer
	// to one request, one message from a stdio server, one event on an SSE
	// stream (default 32 MiB); a larger answer fails the call as a
	// downstream error.
	MaxAnswerBytes int64 `yaml:"max_answer_bytes"`
	// SessionIdleTTL expires idle legacy MCP sessions. It must be longer than
	// CallTimeout, since a session is touched only when a request arrives.
	SessionIdleTTL Duration `yaml:"session_idle_ttl"`
	// CallTimeout bounds one forwarded call (default 10m).
	CallTimeout Duration `yaml:"call_timeout"`
	// ShutdownGrace is how long calls in flight may finish after a stop
	// signal before they are cancelled (default 5s).
	ShutdownGrace Duration `yaml:"shutdown_grace"`
	// AllowedOrigins lists extra Origin values accepted besides the listen
	// host (DNS-rebinding protection). Entries are scheme://host[:port].
	AllowedOrigins []string `yaml:"allowed_origins"`
	// LogLevel is debug, info, warn or error.
	LogLevel string         `yaml:"log_level"`
	Identity IdentityConfig `yaml:"identity"`
	Servers  []ServerConfig `yaml:"servers"`
	// Agents is the registry of known agents (see config_agents.go).
	Agents []AgentConfig `yaml:"agents"`
	// Approvals configures human approval (see config_approvals.go).
	Approvals ApprovalsConfig `yaml:"approvals"`
	// Audit says where the audit trail's keys and anchor live.
	Audit AuditConfig `yaml:"audit"`

	// demo marks the built-in demo configuration: in-process demo servers
	// and the embedded demo policies. Set only by DemoConfig.
	demo bool
	// inProcess supplies in-process servers by name (tests only).
	inProcess map[string]*server.MCPServer
	// noFastLane sends every request through mcp-go (tests only).
	noFastLane bool
}

// IdentityConfig says how agents authenticate.
type IdentityConfig struct {
	// Mode is "dev" (static tokens, loopback only) or "spiffe".
	Mode string `yaml:"mode"`
	// DefaultAgent is the agent a dev-mode request without a token acts as;
	// empty means such requests are refused.
	DefaultAgent string `yaml:"default_agent"`
	// DefaultInitiator is the initiator of DefaultAgent's requests.
	DefaultInitiator string     `yaml:"default_initiator"`
	DefaultTenant    string     `yaml:"default_tenant"`
	Tokens           []DevToken `yaml:"tokens"`
	// AdmitUnregistered lets agents missing from the agents: registry reach
	// policy (as AgentClass "unregistered") instead of being refused
	// outright. Without a registry every agent reaches policy.
	AdmitUnregistered bool `yaml:"admit_unregistered"`
	// SPIFFE and OIDC configure spiffe mode (see identity.go).
	SPIFFE SPIFFEIdentityConfig `yaml:"spiffe"`
	OIDC   OIDCIdentityConfig   `yaml:"oidc"`
}

// DevToken maps a bearer token, read from an environment variable or a file,
// to an agent and initiator. Dev mode only.
type DevToken struct {
	TokenEnv  string   `yaml:"token_env"`
	TokenFile string   `yaml:"token_file"`
	Agent     string   `yaml:"agent"`
	Initiator string   `yaml:"initiator"`
	Tenant    string   `yaml:"tenant"`
	Groups    []string `yaml:"groups"`
}

// AuditConfig places the audit trail's trust roots. Whoever can write a
// file can rewrite what it protects, so in production they belong outside
// the data directory (a secrets mount for the keys, a write-once or
// off-host location for the anchor); empty means the data directory.
type AuditConfig struct {
	// SigningKey is the Ed25519 seed that signs checkpoints (created if
	// missing).
	SigningKey string `yaml:"signing_key"`
	// HMACKey keys the digests of sensitive values (created if missing).
	HMACKey string `yaml:"hmac_key"`
	// AnchorFile is where the latest signed checkpoint is also written.
	AnchorFile string `yaml:"anchor_file"`
}

// ServerConfig is one downstream MCP server.
type ServerConfig struct {
	Name      string `yaml:"name"`
	Transport string `yaml:"transport"` // stdio | streamable-http | sse
	// URL of a streamable-http or sse server.
	URL string `yaml:"url"`
	// Headers sent to an HTTP server; values come from env or files.
	Headers map[string]SecretRef `yaml:"headers"`
	// Command, Args, Env and Dir start a stdio server.
	Command string            `yaml:"command"`
	Args    []string          `yaml:"args"`
	Env     map[string]string `yaml:"env"`
	Dir     string            `yaml:"dir"`
	// StdinTimeout is how long a stdio server may leave a request on its
	// stdin unread (no 16 KiB of it taken) before the broker ends the
	// connection and restarts the server; 0 means 30s. Raise it for a
	// server that stops reading while it works on a long call.
	StdinTimeout Duration `yaml:"stdin_timeout"`
	// Prefix is prepended to the server's tool and prompt names. nil means
	// "<name>__"; an empty string passes names through unchanged.
	Prefix *string `yaml:"prefix"`
	// Trusted servers have their MCP tool annotations believed; for the
	// others the broker assumes the MCP defaults (destructive, open-world).
	Trusted bool `yaml:"trusted"`
	// ProtocolVersion pins the era spoken to this server ("2025-11-25",
	// "2026-07-28"); empty negotiates.
	ProtocolVersion string `yaml:"protocol_version"`
	// RiskTags are attached to every tool of this server for policy.
	RiskTags []string `yaml:"risk_tags"`
	// Tenant, if set, is the tenant the server belongs to
	// (resource.tenant for its tools, resources and prompts).
	Tenant string `yaml:"tenant"`
	// Classify says how each tool's argument fields appear in the audit
	// trail: tool -> field -> public | sensitive | secret. Unlisted fields
	// are sensitive (keyed digest); fields named like credentials, secret.
	Classify map[string]audit.Classes `yaml:"classify"`
	// Agent, if set, says this downstream server is itself an agent with
	// this SPIFFE ID: calls forwarded to it carry a chain token, and when
	// it calls tools through the broker it acts as a child of the caller.
	Agent string `yaml:"agent"`
	// SPIFFEID is the server's expected SPIFFE ID: the broker calls it over
	// mTLS with its own X.509-SVID and refuses any other peer.
	SPIFFEID string `yaml:"spiffe_id"`
	// JWTAudience, if set, makes the broker send a JWT-SVID minted for this
	// audience with every request.
	JWTAudience string `yaml:"jwt_audience"`
	// ForwardAgentToken exists only to be refused with a clear message:
	// the agent's token is never forwarded (no token passthrough).
	ForwardAgentToken bool `yaml:"forward_agent_token"`

	// Builtin names a built-in server (notes, payments) run in process:
	// transport "builtin".
	Builtin string `yaml:"builtin"`

	// inProcess names a server from Config.inProcess (tests only).
	inProcess string
}

// SecretRef points at a secret value without holding it.
type SecretRef struct {
	Env  string `yaml:"env"`
	File string `yaml:"file"`
	// Prefix is prepended to the value, e.g. "Bearer ".
	Prefix string `yaml:"prefix"`
}

// Resolve reads the secret. The result must never be logged.
func (r SecretRef) Resolve() (Secret, error) {
	switch {
	case r.Env != "" && r.File != "":
		return "", errors.New("both env and file set")
	case r.Env != "":
		v, ok := os.LookupEnv(r.Env)
		if !ok || v == "" {
			return "", fmt.Errorf("environment variable %s is not set", r.Env)
		}
		return Secret(r.Prefix + v), nil
	case r.File != "":
		b, err := os.ReadFile(r.File)
		if err != nil {
			return "", fmt.Errorf("read secret file: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("secret file %s is empty", r.File)
		}
		return Secret(r.Prefix + v), nil
	}
	return "", errors.New("neither env nor file set")
}

// Secret is a credential. It prints as <redacted> in logs and %v.
type Secret string

func (Secret) String() string   { return "<redacted>" }
func (Secret) GoString() string { return "<redacted>" }

// Duration is a time.Duration written as "30s", "5m" in YAML.
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string like \"30s\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Defaults returns the configuration every file is decoded over.
func Defaults() Config {
	return Config{
		Listen:         "127.0.0.1:7420",
		DataDir:        "./mcpbroker-data",
		MaxBodyBytes:   4 << 20,
		MaxAnswerBytes: 32 << 20,
		SessionIdleTTL: Duration(30 * time.Minute),
		CallTimeout:    Duration(10 * time.Minute),
		ShutdownGrace:  Duration(5 * time.Second),
		LogLevel:       "info",
		Identity:       IdentityConfig{Mode: "dev"},
	}
}

// DemoConfig is what `serve --demo` runs: built-in demo servers in process,
// the embedded demo policies, dev identity with a default agent.
func DemoConfig() Config {
	c := Defaults()
	c.demo = true
	c.Identity = IdentityConfig{
		Mode:             "dev",
		DefaultAgent:     "spiffe://demo.local/agent/dev",
		DefaultInitiator: "dev",
		DefaultTenant:    "demo",
	}
	c.Agents = []AgentConfig{{
		ID: "spiffe://demo.local/agent/dev", Classes: []string{"demo"}, MaxDepth: 4,
		DefaultTask: &DefaultTaskConfig{Tools: []string{"*"}, TTL: Duration(24 * time.Hour), Purpose: "demo default task"},
	}}
	c.Servers = []ServerConfig{
		{Name: "notes", Transport: "builtin", Builtin: "notes", Trusted: true},
		{Name: "payments", Transport: "builtin", Builtin: "payments", Trusted: true},
	}
	return c
}

// IsDemo reports whether c came from DemoConfig.
func (c Config) IsDemo() bool { return c.demo }

// LoadConfig decodes YAML strictly over Defaults: an unknown key is an
// error naming its line. Relative paths in the file (data_dir, policies,
// a server's dir, and a command or token/header file containing a slash)
// are taken relative to the file's directory. It does not validate; call
// Validate.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseConfig(path, b)
	if err != nil {
		return c, err
	}
	base := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c.DataDir = rel(c.DataDir)
	c.Policies = rel(c.Policies)
	c.CandidatePolicies = rel(c.CandidatePolicies)
	c.Audit.SigningKey, c.Audit.HMACKey, c.Audit.AnchorFile = rel(c.Audit.SigningKey), rel(c.Audit.HMACKey), rel(c.Audit.AnchorFile)
	for i := range c.Identity.Tokens {
		c.Identity.Tokens[i].TokenFile = rel(c.Identity.Tokens[i].TokenFile)
	}
	c.Identity.SPIFFE.SVIDCert, c.Identity.SPIFFE.SVIDKey = rel(c.Identity.SPIFFE.SVIDCert), rel(c.Identity.SPIFFE.SVIDKey)
	for i := range c.Identity.SPIFFE.Bundles {
		c.Identity.SPIFFE.Bundles[i].X509 = rel(c.Identity.SPIFFE.Bundles[i].X509)
		c.Identity.SPIFFE.Bundles[i].JWT = rel(c.Identity.SPIFFE.Bundles[i].JWT)
	}
	for i := range c.Servers {
		s := &c.Servers[i]
		s.Dir = rel(s.Dir)
		if strings.Contains(s.Command, "/") {
			s.Command = rel(s.Command)
		}
		for k, h := range s.Headers {
			h.File = rel(h.File)
			s.Headers[k] = h
		}
	}
	return c, nil
}

// ParseConfig is LoadConfig on bytes; name is used in messages.
func ParseConfig(name string, b []byte) (Config, error) {
	c := Defaults()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("%s: empty config", name)
		}
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

var (
	serverNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	toolPrefixRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{0,64}$`)
	headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		add("listen: %q is not host:port: %v", c.Listen, err)
	}
	if c.DataDir == "" {
		add("data_dir: required")
	}
	if c.Policies == "" && !c.demo {
		add("policies: required (a directory of .cedar files); nothing is allowed without policy")
	}
	if c.MaxBodyBytes < 1024 {
		add("max_body_bytes: %d is below 1024", c.MaxBodyBytes)
	}
	if c.MaxAnswerBytes < 1024 {
		add("max_answer_bytes: %d is below 1024", c.MaxAnswerBytes)
	}
	if c.CallTimeout <= 0 {
		add("call_timeout: must be positive")
	}
	if c.ShutdownGrace < 0 || time.Duration(c.ShutdownGrace) > time.Minute {
		add("shutdown_grace: %s is not between 0s and 1m", time.Duration(c.ShutdownGrace))
	}
	if time.Duration(c.SessionIdleTTL) <= time.Duration(c.CallTimeout) {
		add("session_idle_ttl: %s must be longer than call_timeout %s (a session is only touched when a request arrives)",
			time.Duration(c.SessionIdleTTL), time.Duration(c.CallTimeout))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	for i, o := range c.AllowedOrigins {
		if !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
			add("allowed_origins[%d]: %q must start with http:// or https://", i, o)
		}
	}

	switch c.Identity.Mode {
	case "dev":
		if !isLoopbackHost(host) { // an empty host (":7420") is every interface
			add("identity.mode dev: refusing to listen on %q; dev identities are for loopback only (127.0.0.1, ::1, localhost)", c.Listen)
		}
	case "spiffe":
		errs = append(errs, c.Identity.validateSPIFFE()...)
	default:
		add("identity.mode: %q is not dev or spiffe", c.Identity.Mode)
	}
	if c.Identity.DefaultAgent != "" {
		if err := ValidateSPIFFEID(c.Identity.DefaultAgent); err != nil {
			add("identity.default_agent: %v", err)
		}
		if c.Identity.DefaultInitiator == "" {
			add("identity.default_initiator: required with default_agent")
		}
	}
	for i, t := range c.Identity.Tokens {
		if (t.TokenEnv == "") == (t.TokenFile == "") {
			add("identity.tokens[%d]: exactly one of token_env or token_file is required (tokens are never inline)", i)
		}
		if err := ValidateSPIFFEID(t.Agent); err != nil {
			add("identity.tokens[%d].agent: %v", i, err)
		}
		if t.Initiator == "" {
			add("identity.tokens[%d].initiator: required", i)
		}
	}

	names := map[string]int{}
	for i, s := range c.Servers {
		where := fmt.Sprintf("servers[%d]", i)
		if s.Name != "" {
			where = fmt.Sprintf("servers[%d] (%s)", i, s.Name)
		}
		if !serverNameRE.MatchString(s.Name) {
			add("%s.name: %q must match %s", where, s.Name, serverNameRE)
		} else if j, dup := names[s.Name]; dup {
			add("%s.name: duplicate of servers[%d]", where, j)
		} else {
			names[s.Name] = i
		}
		if s.Prefix != nil && !toolPrefixRE.MatchString(*s.Prefix) {
			add("%s.prefix: %q may only hold [A-Za-z0-9_.-] (MCP tool names)", where, *s.Prefix)
		}
		switch s.Transport {
		case "stdio":
			if s.Command == "" {
				add("%s.command: required for transport stdio", where)
			}
			if s.URL != "" || len(s.Headers) > 0 {
				add("%s: url and headers are for HTTP transports, not stdio", where)
			}
			if s.StdinTimeout < 0 || s.StdinTimeout > 0 && time.Duration(s.StdinTimeout) < time.Second {
				add("%s.stdin_timeout: %s must be at least 1s (or unset for 30s)", where, time.Duration(s.StdinTimeout))
			}
		case "streamable-http", "sse":
			if !strings.HasPrefix(s.URL, "http://") && !strings.HasPrefix(s.URL, "https://") {
				add("%s.url: %q must be an http:// or https:// URL", where, s.URL)
			}
			if s.Command != "" || len(s.Args) > 0 || s.StdinTimeout != 0 {
				add("%s: command, args and stdin_timeout are for transport stdio", where)
			}
			for k, v := range s.Headers {
				if !headerNameRE.MatchString(k) {
					add("%s.headers: %q is not a valid header name", where, k)
				}
				if (v.Env == "") == (v.File == "") {
					add("%s.headers[%s]: exactly one of env or file is required (secrets are never inline)", where, k)
				}
				if strings.EqualFold(k, "Authorization") && v.Env == "" && v.File == "" {
					add("%s.headers[%s]: the agent's token is never forwarded", where, k)
				}
			}
		case "builtin":
			if s.Builtin != "notes" && s.Builtin != "payments" {
				add("%s.builtin: %q is not a built-in server (notes, payments)", where, s.Builtin)
			}
		case "in-process":
			if s.inProcess == "" {
				add("%s.transport: in-process is for tests; use builtin", where)
			}
		default:
			add("%s.transport: %q is not stdio, streamable-http, sse or builtin", where, s.Transport)
		}
		errs = append(errs, c.validateServerIdentity(where, s)...)
		switch s.ProtocolVersion {
		case "", "2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28":
		default:
			add("%s.protocol_version: %q is not a known MCP version", where, s.ProtocolVersion)
		}
	}
	for i, s := range c.Servers {
		for tool, cl := range s.Classify {
			if err := cl.Validate(); err != nil {
				add("servers[%d].classify[%s]: %v", i, tool, err)
			}
		}
	}
	errs = append(errs, c.validateAgents()...)
	errs = append(errs, c.Approvals.validate()...)
	return errors.Join(errs...)
}

// ToolPrefix is the prefix agents see in front of this server's tool names.
func (s ServerConfig) ToolPrefix() string {
	if s.Prefix == nil {
		return s.Name + "__"
	}
	return *s.Prefix
}

// InProcess names the in-process server of a builtin (or test) server.
func (s ServerConfig) InProcess() string {
	if s.Builtin != "" {
		return s.Builtin
	}
	return s.inProcess
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// ValidateSPIFFEID checks that id is a SPIFFE ID with a path.
func ValidateSPIFFEID(id string) error {
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return fmt.Errorf("%q is not a SPIFFE ID: %w", id, err)
	}
	if sid.Path() == "" {
		return fmt.Errorf("%q: a workload SPIFFE ID needs a path", id)
	}
	return nil
}
