// Package policies is the broker's policy decision point: it compiles Cedar
// policies against the embedded schema (broker.cedarschema) and decides each
// tools/call, resources/read and prompts/get, and filters tools/list.
//
// Place in the flow: identity and session/task resolve who calls and for whom,
// then the pipeline asks this package; approval and forwarding come after. The
// package is pure and in memory: it never performs I/O (except ReadDir, used at
// load time), never starts goroutines, never imports broker/... packages, and
// never mutates a compiled Set. A reload compiles a new Set and swaps it into the
// Engine atomically.
//
// A call is decided once per principal of the delegation chain (the initiator
// first, then every agent, the acting agent last) and allowed only if every pass
// allows with no evaluation errors: a delegate never exceeds anyone upstream of it,
// and an erroring policy (which cedar-go skips, forbids included) denies.
package policies
