// Package ledger holds the audit ledger's real-process tests: the built
// broker under load from real MCP clients, killed with SIGKILL, then
// verified offline with the built CLI.
package ledger
