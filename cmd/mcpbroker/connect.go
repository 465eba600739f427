package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// connect is the stdio bridge for agent frameworks that can only launch a
// command: MCP JSON-RPC lines on stdin/stdout are relayed to the broker's
// streamable HTTP endpoint over mTLS with this workload's X.509-SVID (or a
// JWT-SVID), carrying the user's access token.
func connect(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "the broker's MCP endpoint, https://HOST:PORT/mcp")
	brokerID := fs.String("broker-id", "", "the broker's SPIFFE ID (default: any workload of this workload's trust domain)")
	wlAPI := fs.String("workload-api", "", "SPIFFE Workload API address (default: $SPIFFE_ENDPOINT_SOCKET)")
	tokenFile := fs.String("token-file", "", "file holding the user's access token (re-read for every request)")
	tokenEnv := fs.String("token-env", "", "environment variable holding the user's access token")
	useJWT := fs.Bool("jwt-svid", false, "authenticate with a JWT-SVID (audience --broker-id) instead of the X.509-SVID client certificate")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for this workload's SVID")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error (logs go to stderr)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !strings.HasPrefix(*url, "https://") {
		fmt.Fprintln(stderr, "mcpbroker connect: --url https://HOST:PORT/mcp is required")
		return 2
	}
	if *tokenFile != "" && *tokenEnv != "" {
		fmt.Fprintln(stderr, "mcpbroker connect: give at most one of --token-file and --token-env")
		return 2
	}
	if *useJWT && *brokerID == "" {
		fmt.Fprintln(stderr, "mcpbroker connect: --jwt-svid needs --broker-id (the JWT-SVID's audience)")
		return 2
	}
	log := newLogger(stderr, *logLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	sctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var copts []workloadapi.ClientOption
	if *wlAPI != "" {
		copts = append(copts, workloadapi.WithAddr(*wlAPI))
	}
	src, err := workloadapi.NewX509Source(sctx, workloadapi.WithClientOptions(copts...))
	if err != nil {
		fmt.Fprintf(stderr, "mcpbroker connect: no X.509-SVID from the Workload API within %s (is this workload registered?): %v\n", *timeout, err)
		return 1
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		fmt.Fprintf(stderr, "mcpbroker connect: %v\n", err)
		return 1
	}
	authz := tlsconfig.AuthorizeMemberOf(svid.ID.TrustDomain())
	if *brokerID == "" && (*tokenFile != "" || *tokenEnv != "") {
		// An initiator token goes to whoever answers: any workload of the
		// trust domain would do without the broker's own ID.
		fmt.Fprintln(stderr, "mcpbroker connect: --broker-id is required with an initiator token (--token-file, --token-env), so that the token goes only to the broker")
		return 2
	}
	if *brokerID != "" {
		id, err := spiffeid.FromString(*brokerID)
		if err != nil {
			fmt.Fprintf(stderr, "mcpbroker connect: --broker-id: %v\n", err)
			return 2
		}
		authz = tlsconfig.AuthorizeID(id)
	}
	br := &bridge{url: *url, out: stdout, log: log, token: tokenReader(*tokenFile, *tokenEnv)}
	var tcfg *tls.Config
	if *useJWT {
		tcfg = tlsconfig.TLSClientConfig(src, authz)
		jsrc, err := workloadapi.NewJWTSource(sctx, workloadapi.WithClientOptions(copts...))
		if err != nil {
			fmt.Fprintf(stderr, "mcpbroker connect: JWT source: %v\n", err)
			return 1
		}
		defer jsrc.Close()
		aud := *brokerID
		br.jwt = func(ctx context.Context) (string, error) {
			s, err := jsrc.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud})
			if err != nil {
				return "", err
			}
			return s.Marshal(), nil
		}
	} else {
		tcfg = tlsconfig.MTLSClientConfig(src, src, authz)
	}
	br.hc = &http.Client{Transport: &http.Transport{TLSClientConfig: tcfg, ForceAttemptHTTP2: true, IdleConnTimeout: 90 * time.Second}}
	log.Info("bridging stdio to the broker", "url", *url, "workload", svid.ID.String())
	if err := br.run(ctx, stdin); err != nil {
		fmt.Fprintf(stderr, "mcpbroker connect: %v\n", err)
		return 1
	}
	return 0
}

// tokenReader returns the user's token, read fresh each time (the file may
// be rotated by another process); "" when none is configured.
func tokenReader(file, env string) func() (string, error) {
	return func() (string, error) {
		switch {
		case file != "":
			b, err := os.ReadFile(file)
			if err != nil {
				return "", fmt.Errorf("token file: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		case env != "":
			v := strings.TrimSpace(os.Getenv(env))
			if v == "" {
				return "", fmt.Errorf("environment variable %s is empty", env)
			}
			return v, nil
		}
		return "", nil
	}
}

type bridge struct {
	url   string
	hc    *http.Client
	out   io.Writer
	log   *slog.Logger
	token func() (string, error)
	jwt   func(context.Context) (string, error) // nil: mTLS

	outMu   sync.Mutex
	mu      sync.Mutex
	session string
	version string
}

type peek struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Result *struct {
		ProtocolVersion string `json:"protocolVersion"`
	} `json:"result"`
}

func (b *bridge) run(ctx context.Context, stdin io.Reader) error {
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var wg sync.WaitGroup
	defer wg.Wait()
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		msg := append([]byte(nil), line...)
		var p peek
		_ = json.Unmarshal(msg, &p)
		if p.Method == "initialize" { // later requests need its session ID
			b.send(ctx, msg, p)
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); b.send(ctx, msg, p) }()
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	b.closeSession()
	return nil
}

// send POSTs one message and relays whatever comes back (a JSON body or
// an SSE stream of messages) to stdout.
func (b *bridge) send(ctx context.Context, msg []byte, p peek) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url, bytes.NewReader(msg))
	if err != nil {
		b.fail(p, -32603, err.Error())
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if err := b.authorize(ctx, req); err != nil {
		b.fail(p, -32603, "mcpbroker connect: "+err.Error())
		return
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.fail(p, -32603, "mcpbroker connect: broker unreachable: "+err.Error())
		return
	}
	defer resp.Body.Close()
	if s := resp.Header.Get("Mcp-Session-Id"); s != "" && p.Method == "initialize" {
		b.mu.Lock()
		b.session = s
		b.mu.Unlock()
	}
	switch ct := resp.Header.Get("Content-Type"); {
	case resp.StatusCode == http.StatusAccepted:
	case strings.HasPrefix(ct, "text/event-stream"):
		b.relaySSE(resp.Body, p)
	case resp.StatusCode >= 400:
		// The broker's error bodies carry a null id: answer the request
		// itself, so the client is not left waiting.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e struct {
			Error struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		msg := "broker answered " + resp.Status
		if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
			msg += ": " + e.Error.Message
		}
		if h := resp.Header.Get("WWW-Authenticate"); h != "" {
			msg += " (WWW-Authenticate: " + h + ")"
		}
		code := e.Error.Code
		if code == 0 {
			code = -32603
		}
		b.fail(p, code, "mcpbroker connect: "+msg)
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		b.relayJSON(body, p)
	}
}

func (b *bridge) authorize(ctx context.Context, req *http.Request) error {
	tok, err := b.token()
	if err != nil {
		return err
	}
	if b.jwt != nil {
		j, err := b.jwt(ctx)
		if err != nil {
			return fmt.Errorf("JWT-SVID: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+j)
		if tok != "" {
			req.Header.Set("X-Initiator-Token", tok)
		}
	} else if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	b.mu.Lock()
	if b.session != "" {
		req.Header.Set("Mcp-Session-Id", b.session)
	}
	if b.version != "" {
		req.Header.Set("Mcp-Protocol-Version", b.version)
	}
	b.mu.Unlock()
	return nil
}

// relayJSON writes a JSON-RPC body to stdout; false if it is not one.
func (b *bridge) relayJSON(body []byte, p peek) bool {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || (body[0] != '{' && body[0] != '[') || !json.Valid(body) {
		return false
	}
	b.observe(body, p)
	b.write(body)
	return true
}

func (b *bridge) relaySSE(r io.Reader, p peek) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var data []string
	flush := func() {
		if len(data) > 0 {
			b.relayJSON([]byte(strings.Join(data, "\n")), p)
			data = data[:0]
		}
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	flush()
}

// observe learns the negotiated protocol version from initialize's result.
func (b *bridge) observe(body []byte, p peek) {
	if p.Method != "initialize" {
		return
	}
	var r peek
	if json.Unmarshal(body, &r) == nil && r.Result != nil && r.Result.ProtocolVersion != "" {
		b.mu.Lock()
		b.version = r.Result.ProtocolVersion
		b.mu.Unlock()
	}
}

func (b *bridge) write(msg []byte) {
	b.outMu.Lock()
	defer b.outMu.Unlock()
	_, _ = b.out.Write(append(append([]byte(nil), msg...), '\n'))
}

// fail answers a request (not a notification) with a JSON-RPC error.
func (b *bridge) fail(p peek, code int, msg string) {
	b.log.Warn("request failed", "method", p.Method, "err", msg)
	if len(p.ID) == 0 || p.Method == "" {
		return
	}
	out, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": p.ID, "error": map[string]any{"code": code, "message": msg}})
	b.write(out)
}

// closeSession ends the broker session when stdin closes.
func (b *bridge) closeSession() {
	b.mu.Lock()
	s := b.session
	b.mu.Unlock()
	if s == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, b.url, nil)
	if err := b.authorize(ctx, req); err != nil {
		return
	}
	if resp, err := b.hc.Do(req); err == nil {
		resp.Body.Close()
	}
}
