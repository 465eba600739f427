package tools

import (
	"fmt"

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
	// Prefix is prepended to tool and prompt names.
	Prefix string
	// Trusted servers have their tool annotations believed.
	Trusted         bool
	ProtocolVersion string
	RiskTags        []string
	// Server is the in-process server for TransportInProcess.
	Server *server.MCPServer
}
