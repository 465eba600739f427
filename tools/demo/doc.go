// Package demo provides the built-in downstream MCP servers that
// `mcpbroker serve --demo` runs in process: a notes store and a toy payments
// ledger.
//
// They sit at the far end of the flow, behind forward: the broker reaches
// them through mcp-go's in-process client exactly as it would reach a remote
// downstream. They are ordinary mcp-go servers with honest tool annotations,
// input and output schemas, and isError results for every validation failure.
//
// This package never imports broker packages, never trusts its annotations to
// be enforced by anyone, and never touches disk or network: all state is in
// memory and dies with the server instance.
package demo
