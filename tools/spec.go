package tools

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/mark3labs/mcp-go/server"
)

// Transport names how the broker reaches a downstream server.
type Transport string

const (
	TransportStdio          Transport = "stdio"
	TransportStreamableHTTP Transport = "streamable-http"
	TransportSSE            Transport = "sse"
	TransportInProcess      Transport = "in-process"
)

// Validate reports whether t is a known transport.
func (t Transport) Validate() error {
	switch t {
	case TransportStdio, TransportStreamableHTTP, TransportSSE, TransportInProcess:
		return nil
	}
	return fmt.Errorf("unknown transport %q", string(t))
}

// Spec is one downstream server, with its secrets already resolved by the
// caller (the composition root). Headers hold credentials: never log them.
type Spec struct {
	Name      string
	Transport Transport
	URL       string
	Headers   map[string]string
	Command   string
	Args      []string
	Env       map[string]string
	Dir       string
	// StdinTimeout bounds how long a stdio server may leave a request on
	// its stdin unread before the connection is ended (0: 30s).
	StdinTimeout time.Duration
	// Prefix is prepended to tool and prompt names.
	Prefix string
	// Trusted servers have their tool annotations believed.
	Trusted         bool
	ProtocolVersion string
	RiskTags        []string
	// Server is the in-process server for TransportInProcess.
	Server *server.MCPServer
	// TLS, if set, is the client TLS configuration for an HTTPS server:
	// the broker's own X.509-SVID and the server's expected SPIFFE ID. A
	// server that presents another ID fails the handshake and is not called.
	TLS *tls.Config
	// HeaderFunc, if set, adds headers to every HTTP request (a JWT-SVID
	// minted for this server). The agent's own token is never among them.
	HeaderFunc func(context.Context) map[string]string
}

// httpClientFor returns the client for spec: the pool's shared one, or a
// dedicated one carrying spec.TLS.
func httpClientFor(shared *http.Client, spec Spec) *http.Client {
	if spec.TLS == nil {
		return shared
	}
	t := shared.Transport.(*http.Transport).Clone()
	t.TLSClientConfig = spec.TLS
	return &http.Client{Transport: t}
}

// headerFunc never returns nil, so transports can always take it.
func (s Spec) headerFunc() func(context.Context) map[string]string {
	if s.HeaderFunc == nil {
		return func(context.Context) map[string]string { return nil }
	}
	return s.HeaderFunc
}
