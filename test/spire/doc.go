// Package spire holds the integration test against a real SPIRE v1.13.3:
// spire-server and spire-agent on loopback and unix sockets (sqlite
// datastore, join token, unix uid attestor), the built broker, the example
// notes-server and `mcpbroker connect` each getting their SVIDs from the
// real Workload API under their own uid, and a tool call going through with
// mTLS on both hops.
//
// SPIRE is built from the pinned tools module in tools/ (never the
// product's go.mod) by install.sh. Without the binaries, root or setpriv the
// test skips, and fails instead when MCPBROKER_E2E_REQUIRE=1.
package spire
