// Package tools is what is being called: the registry of downstream MCP
// servers, the pooled MCP clients that reach them (stdio, streamable HTTP,
// SSE, in-process), the merged catalog of tools, resources and prompts with
// their namespaced names, and argument canonicalization.
//
// It sits at the end of the call path: the broker's pipeline calls it only
// after a call has been authorized and recorded. It never decides policy and
// never sees an agent's credentials: downstream servers get the broker's own.
// Requests that a downstream server sends back (elicitation, sampling,
// roots, progress, logging) are handed to the Caller that the pipeline put
// in the call's context; tools never reaches into the face itself.
package tools
