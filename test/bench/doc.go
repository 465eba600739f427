// Package bench measures what brokering costs: N concurrent real MCP clients
// (the official go-sdk client, each with its own connection and session)
// drive three targets in the same process and the same run, interleaved in
// short rounds so that machine noise hits all three alike:
//
//   - direct: the downstream MCP server itself (echo and sleep tools,
//     mcp-go streamable HTTP on 127.0.0.1);
//   - proxy: a transparent mcp-go proxy with no policy and no records, the
//     floor of one extra hop (server.NewMCPServer re-exposing the
//     downstream's tools through client.CallTool);
//   - broker: mcpbroker built with broker.New, with Cedar (initiator,
//     planner and acting agent: a three-pass decision through a delegated
//     task), durable records (bbolt group commit, fsync on) and, as a
//     fourth target when asked, the same broker with records not fsynced.
//
// Run it with `go run ./test/bench/cmd/loadgen` (flags in its doc) or the
// Go benchmarks in this package (`go test -bench . ./test/bench`). Nothing
// here runs in a plain `go test ./...` except a short smoke test.
//
// The package is a test harness: it never changes what it measures, and it
// never imports broker internals (only broker.New, its Config and Options).
package bench
