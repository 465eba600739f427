// Package broker is the composition root and the MCP face of mcpbroker: it
// wires identity (agents), policy (policies), the audit ledger
// (broker/audit over broker/store) and the downstream pool (tools) into one
// call pipeline, serves it to agents over streamable HTTP and stdio, and
// owns start-up and graceful shutdown.
//
// Only this package knows about JSON-RPC and HTTP. It drives the stages in
// one direction (face → identity → policy → record → forward → record);
// no stage calls back into it.
package broker
