// Package metrics is the broker's live observability: Prometheus collectors
// served at /metrics, OpenTelemetry traces of brokered calls, and the
// /healthz and /readyz probes.
//
// The pipeline reports to it (Metrics.CallDecided, Tracer.StartCall, ...)
// after each stage; metrics never calls back into the pipeline, never
// decides anything and never sees argument values, only stable codes,
// durations and names. Every method is safe on a nil receiver, so a broker
// built without metrics or tracing needs no conditionals.
//
// Tracing is off unless the standard OTEL_* environment asks for it (see
// TracingConfigFromEnv, which cmd/ calls: only cmd/ reads the environment).
package metrics
