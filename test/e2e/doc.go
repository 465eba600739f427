// Package e2e holds mcpbroker's end-to-end tests. They start the built
// broker binary as a real process, real downstream MCP servers (the Go
// testserver over stdio and streamable HTTP, and the reference
// server-everything from npm), and talk to the broker with the official Go
// MCP SDK as the agent-side client, over loopback only. Every test checks the
// audit records it leaves through `mcpbroker audit list --json` and that no
// downstream process outlives the broker.
//
// test/run builds the binaries, installs the npm servers and sets
// MCPBROKER_BIN, MCPBROKER_TESTSERVER, MCPBROKER_EVERYTHING and
// MCPBROKER_E2E_REQUIRE=1. Under a bare `go test` the Go binaries are built
// on demand and the tests that need server-everything skip; with
// MCPBROKER_E2E_REQUIRE=1 a missing tool fails the test instead.
//
// This package imports no broker code: it sees the broker only as users do.
package e2e
