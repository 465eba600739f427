package demo

import "github.com/mark3labs/mcp-go/server"

// Version is the serverInfo version reported by every demo server.
const Version = "0.1.0"

// Servers returns fresh instances of every demo server, keyed by the name the
// broker should register them under. Each call returns new servers with
// freshly seeded state; the caller owns them.
func Servers() map[string]*server.MCPServer {
	return map[string]*server.MCPServer{
		"notes":    NewNotes(),
		"payments": NewPayments(),
	}
}
