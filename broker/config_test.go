package broker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpbroker/mcpbroker/broker/audit"
)

func TestParseConfigStrict(t *testing.T) {
	_, err := ParseConfig("c.yaml", []byte("listen: 127.0.0.1:1\nlisten_port: 3\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "listen_port") {
		t.Fatalf("unknown key: %v", err)
	}
	_, err = ParseConfig("c.yaml", []byte("call_timeout: 5\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("bad duration: %v", err)
	}
}

func TestValidateReportsEverything(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte(`
listen: 0.0.0.0:7420
max_answer_bytes: 100
identity:
  mode: dev
  default_agent: not-a-spiffe-id
  tokens:
    - agent: spiffe://d/agent/a
      initiator: alice
servers:
  - name: Bad Name
    transport: stdio
    stdin_timeout: 500ms
  - name: web
    transport: streamable-http
    url: ftp://x
    stdin_timeout: 1m
    headers:
      Authorization: {}
  - name: web
    transport: carrier-pigeon
`))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		"policies: required",
		"refusing to listen",
		"default_agent",
		"default_initiator",
		"exactly one of token_env or token_file",
		"servers[0]",
		"command: required",
		"url",
		"headers[Authorization]",
		"duplicate of servers[1]",
		"carrier-pigeon",
		"max_answer_bytes: 100 is below 1024",
		"stdin_timeout: 500ms must be at least 1s",
		"(web): command, args and stdin_timeout are for transport stdio",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestValidDefaultsAndPrefix(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte(`
policies: ./p
servers:
  - {name: a, transport: stdio, command: x, stdin_timeout: 5m}
  - {name: b, transport: sse, url: "http://127.0.0.1:1/sse", prefix: ""}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Servers[0].ToolPrefix() != "a__" || c.Servers[1].ToolPrefix() != "" {
		t.Errorf("prefixes %q %q", c.Servers[0].ToolPrefix(), c.Servers[1].ToolPrefix())
	}
	if c.MaxBodyBytes != 4<<20 || c.Listen != "127.0.0.1:7420" {
		t.Errorf("defaults not applied: %+v", c)
	}
	d := DemoConfig()
	if err := d.Validate(); err != nil {
		t.Errorf("demo config invalid: %v", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	for _, out := range []string{s.String(), s.GoString()} {
		if strings.Contains(out, "hunter2") {
			t.Fatal("secret printed")
		}
	}
}

func TestPreAuthLimit(t *testing.T) {
	var l preAuthLimit
	now := time.Unix(1000, 0)
	recorded := 0
	for range 1000 {
		if ok, _ := l.allow(now); ok {
			recorded++
		}
	}
	if recorded != int(preAuthBurst) {
		t.Fatalf("burst recorded %d, want %d", recorded, int(preAuthBurst))
	}
	ok, suppressed := l.allow(now.Add(time.Second))
	if !ok || suppressed != 1000-int(preAuthBurst) {
		t.Fatalf("after a second: ok=%v suppressed=%d", ok, suppressed)
	}
}

// TestStdinTimeoutReachesTheServer: a stdio server's stdin_timeout is what
// its connection is given.
func TestStdinTimeoutReachesTheServer(t *testing.T) {
	cfg := permissiveConfig(t, "", "asker", askServer())
	cfg.DataDir = t.TempDir()
	cfg.Servers = append(cfg.Servers,
		ServerConfig{Name: "slow", Transport: "stdio", Command: "true", StdinTimeout: Duration(2 * time.Minute)},
		ServerConfig{Name: "plain", Transport: "stdio", Command: "true"})
	b, err := New(cfg, Options{Logger: testLogger(t), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.closeStores)
	specs, err := b.specs()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]time.Duration{}
	for _, sp := range specs {
		got[sp.Name] = sp.StdinTimeout
	}
	if got["slow"] != 2*time.Minute || got["plain"] != 0 {
		t.Fatalf("stdin timeouts %v, want slow 2m and plain unset (the 30s default)", got)
	}
}

// TestAuditTrustRootsOutsideTheDataDir: audit.signing_key, hmac_key and
// anchor_file put the trail's trust roots where the config says, and none
// of them in the data directory.
func TestAuditTrustRootsOutsideTheDataDir(t *testing.T) {
	roots := t.TempDir()
	cfg := permissiveConfig(t, "", "asker", askServer())
	cfg.DataDir = t.TempDir()
	cfg.Audit = AuditConfig{SigningKey: filepath.Join(roots, "sign.key"), HMACKey: filepath.Join(roots, "hmac.key"), AnchorFile: filepath.Join(roots, "anchor.json")}
	_, _, stop := startBroker(t, cfg)
	stop() // the shutdown checkpoint writes the anchor
	for _, f := range []string{"sign.key", "hmac.key", "anchor.json"} {
		if _, err := os.Stat(filepath.Join(roots, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, f := range []string{KeyFile, audit.SigningKeyFile, audit.AnchorFile} {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, f)); err == nil {
			t.Errorf("%s is in the data directory", f)
		}
	}
	signer, err := audit.LoadSigner(cfg.Audit.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	a, err := audit.ReadAnchor(cfg.Audit.AnchorFile)
	if err != nil || a.Verify(signer.PublicKey()) != nil {
		t.Fatalf("anchor not signed by the configured key: %v", err)
	}
}

// TestDevModeLoopbackOnly: dev identities refuse every non-loopback listen
// address, an empty host (every interface) included.
func TestDevModeLoopbackOnly(t *testing.T) {
	for _, listen := range []string{":7420", "0.0.0.0:7420", "[::]:7420", "192.0.2.1:7420"} {
		c := DemoConfig()
		c.Listen = listen
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "refusing to listen") {
			t.Errorf("dev mode on %q: %v", listen, err)
		}
	}
	c := DemoConfig()
	c.Listen = "127.0.0.1:7420"
	if err := c.Validate(); err != nil {
		t.Fatalf("dev mode on loopback: %v", err)
	}
}
