// Command notes-server is a downstream MCP server that accepts only the
// broker: it serves streamable HTTP over mTLS with its own X.509-SVID from
// the SPIFFE Workload API, admits exactly one peer SPIFFE ID (the broker),
// and, with -jwt-audience, also requires a JWT-SVID for that audience on
// every request. An agent that bypasses the broker cannot call it.
//
//	notes-server -listen 127.0.0.1:8443 -allow spiffe://example.org/broker \
//	    [-jwt-audience spiffe://example.org/tools/notes] [-workload-api unix:///…/api.sock]
//
// It prints "LISTENING https://HOST:PORT/mcp" on stdout once it accepts
// connections, and one line per call on stderr. Used by examples/spire and
// the real-SPIRE test in test/spire.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

type peerKey struct{}

func main() {
	listen := flag.String("listen", "127.0.0.1:8443", "address to serve on")
	allow := flag.String("allow", "", "the only SPIFFE ID allowed to call (the broker's)")
	jwtAud := flag.String("jwt-audience", "", "also require a JWT-SVID for this audience")
	addr := flag.String("workload-api", "", "Workload API address (default $SPIFFE_ENDPOINT_SOCKET)")
	timeout := flag.Duration("timeout", 30*time.Second, "how long to wait for this workload's SVID")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("notes-server: ")
	allowed, err := spiffeid.FromString(*allow)
	if err != nil {
		log.Fatalf("-allow: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var copts []workloadapi.ClientOption
	if *addr != "" {
		copts = append(copts, workloadapi.WithAddr(*addr))
	}
	src, err := workloadapi.NewX509Source(sctx, workloadapi.WithClientOptions(copts...))
	if err != nil {
		log.Fatalf("no X.509-SVID within %s: %v", *timeout, err)
	}
	defer src.Close()
	var jsrc *workloadapi.JWTSource
	if *jwtAud != "" {
		if jsrc, err = workloadapi.NewJWTSource(sctx, workloadapi.WithClientOptions(copts...)); err != nil {
			log.Fatalf("JWT bundles: %v", err)
		}
		defer jsrc.Close()
	}
	me, _ := src.GetX509SVID()

	s := server.NewMCPServer("notes", "1")
	s.AddTool(mcp.NewTool("echo", mcp.WithDescription("Echo the text back."), mcp.WithString("text"),
		mcp.WithReadOnlyHintAnnotation(true), mcp.WithDestructiveHintAnnotation(false), mcp.WithOpenWorldHintAnnotation(false)),
		func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			p, _ := ctx.Value(peerKey{}).(string)
			log.Printf("call echo %s", p)
			return mcp.NewToolResultText("echo: " + req.GetString("text", "")), nil
		})
	stream := server.NewStreamableHTTPServer(s, server.WithHTTPContextFunc(func(ctx context.Context, r *http.Request) context.Context {
		return context.WithValue(ctx, peerKey{}, r.Header.Get("X-Verified-Peer"))
	}))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := "mtls=" + allowed.String() // the handshake admitted nobody else
		if jsrc != nil {
			tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			js, err := jwtsvid.ParseAndValidate(tok, jsrc, []string{*jwtAud})
			if err != nil || js.ID != allowed {
				log.Printf("refused: JWT-SVID: %v", errors.Join(err, errIf(err == nil, "subject "+js.ID.String())))
				http.Error(w, "JWT-SVID required", http.StatusUnauthorized)
				return
			}
			peer += " jwt-svid=" + js.ID.String()
		}
		r.Header.Set("X-Verified-Peer", peer)
		stream.ServeHTTP(w, r)
	})
	cfg := tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeID(allowed))
	cfg.SessionTicketsDisabled = true // a resumed session would skip the authorizer
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.Default()}
	go func() { <-ctx.Done(); _ = hs.Shutdown(context.Background()) }()
	fmt.Printf("LISTENING https://%s/mcp\n", ln.Addr())
	log.Printf("serving as %s, admitting only %s", me.ID, allowed)
	if err := hs.Serve(tls.NewListener(ln, cfg)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

func errIf(cond bool, msg string) error {
	if cond {
		return errors.New(msg)
	}
	return nil
}
