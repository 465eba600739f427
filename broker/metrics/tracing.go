package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// instrumentation names the tracer.
const instrumentation = "github.com/mcpbroker/mcpbroker/broker"

// TracingConfig is what TracingConfigFromEnv reads from the standard OTEL_*
// variables. The zero value is tracing off.
type TracingConfig struct {
	Enabled bool
	// Endpoint is the full OTLP/HTTP traces URL; empty means the exporter's
	// default, http://localhost:4318/v1/traces.
	Endpoint    string
	Headers     map[string]string
	ServiceName string
	// Sampler is "always_on", "always_off", "traceidratio" or one of those
	// prefixed with "parentbased_"; empty means parentbased_always_on.
	Sampler    string
	SamplerArg float64
	// Attributes are extra resource attributes (OTEL_RESOURCE_ATTRIBUTES).
	Attributes map[string]string
}

// TracingConfigFromEnv reads the OpenTelemetry SDK environment through
// getenv (os.Getenv in cmd/). Tracing is on when OTEL_TRACES_EXPORTER is
// "otlp", or is unset and an OTLP endpoint is set; OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none turns it off. Only OTLP over HTTP/protobuf is
// supported; another exporter or protocol is an error, never a silent no-op.
func TracingConfigFromEnv(getenv func(string) string) (TracingConfig, error) {
	var c TracingConfig
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return c, nil
	}
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		if base := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); base != "" {
			endpoint = strings.TrimSuffix(base, "/") + "/v1/traces"
		}
	}
	switch exp := getenv("OTEL_TRACES_EXPORTER"); exp {
	case "none":
		return c, nil
	case "":
		if endpoint == "" {
			return c, nil
		}
	case "otlp":
	default:
		return c, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: only otlp is supported", exp)
	}
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if proto != "" && proto != "http/protobuf" {
		return c, fmt.Errorf("OTLP protocol %q: only http/protobuf is supported", proto)
	}
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("OTLP traces endpoint %q: want an http(s) URL", endpoint)
		}
	}
	c.Enabled = true
	c.Endpoint = endpoint
	var err error
	if c.Headers, err = parsePairs(getenv("OTEL_EXPORTER_OTLP_HEADERS")); err != nil {
		return c, fmt.Errorf("OTEL_EXPORTER_OTLP_HEADERS: %w", err)
	}
	th, err := parsePairs(getenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS"))
	if err != nil {
		return c, fmt.Errorf("OTEL_EXPORTER_OTLP_TRACES_HEADERS: %w", err)
	}
	for k, v := range th {
		if c.Headers == nil {
			c.Headers = map[string]string{}
		}
		c.Headers[k] = v
	}
	if c.Attributes, err = parsePairs(getenv("OTEL_RESOURCE_ATTRIBUTES")); err != nil {
		return c, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	c.ServiceName = getenv("OTEL_SERVICE_NAME")
	c.Sampler = getenv("OTEL_TRACES_SAMPLER")
	if a := getenv("OTEL_TRACES_SAMPLER_ARG"); a != "" {
		if c.SamplerArg, err = strconv.ParseFloat(a, 64); err != nil || c.SamplerArg < 0 || c.SamplerArg > 1 {
			return c, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want 0..1", a)
		}
	} else {
		c.SamplerArg = 1
	}
	if _, err := sampler(c); err != nil {
		return c, err
	}
	return c, nil
}

// parsePairs parses "k=v,k2=v2" with URL-encoded values (W3C baggage
// syntax, as the OTel spec asks for headers and resource attributes).
func parsePairs(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, p := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(p, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, errors.New("want key=value pairs separated by commas")
		}
		dv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("value of %s: %w", k, err)
		}
		out[k] = dv
	}
	return out, nil
}

func sampler(c TracingConfig) (sdktrace.Sampler, error) {
	name, parent := strings.CutPrefix(c.Sampler, "parentbased_")
	var s sdktrace.Sampler
	switch name {
	case "", "always_on":
		s = sdktrace.AlwaysSample()
	case "always_off":
		s = sdktrace.NeverSample()
	case "traceidratio":
		s = sdktrace.TraceIDRatioBased(c.SamplerArg)
	default:
		return nil, fmt.Errorf("OTEL_TRACES_SAMPLER=%q is not supported", c.Sampler)
	}
	if parent || c.Sampler == "" {
		s = sdktrace.ParentBased(s)
	}
	return s, nil
}

// Tracer starts a span per brokered call and carries W3C trace context to
// the downstream request. A nil *Tracer, or one built from a disabled
// config, records nothing and propagates nothing.
type Tracer struct {
	tp     *sdktrace.TracerProvider // nil when off
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

// NewTracer builds a tracer that exports over OTLP/HTTP in batches, or a
// no-op one when cfg is disabled. It starts the exporter's goroutine:
// Shutdown flushes and stops it.
func NewTracer(ctx context.Context, cfg TracingConfig, version string) (*Tracer, error) {
	prop := propagation.TraceContext{}
	if !cfg.Enabled {
		return &Tracer{tracer: noop.NewTracerProvider().Tracer(instrumentation), prop: prop}, nil
	}
	opts := []otlptracehttp.Option{}
	if cfg.Endpoint != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(cfg.Endpoint))
	}
	if len(cfg.Headers) > 0 {
		opts = append(opts, otlptracehttp.WithHeaders(cfg.Headers))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	smp, err := sampler(cfg)
	if err != nil {
		return nil, err
	}
	name := cfg.ServiceName
	if name == "" {
		name = "mcpbroker"
	}
	attrs := []attribute.KeyValue{
		attribute.String("service.name", name),
		attribute.String("service.version", version),
	}
	for k, v := range cfg.Attributes {
		if k != "service.name" {
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(smp),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
	)
	return &Tracer{tp: tp, tracer: tp.Tracer(instrumentation, trace.WithInstrumentationVersion(version)), prop: prop}, nil
}

// Shutdown flushes pending spans and stops the exporter. It is safe to call
// on a nil or disabled Tracer and more than once.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil || t.tp == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// Call describes a brokered call for its span. Names follow the OTel MCP
// and GenAI semantic conventions where they exist.
type Call struct {
	Method     string // mcp.method.name: tools/call, resources/read, prompts/get
	Target     string // gen_ai.tool.name for tools/call; the resource or prompt otherwise
	Server     string // downstream server
	CallID     string
	Session    string // mcp.session.id
	RequestID  string // jsonrpc.request.id
	ChainDepth int
}

// CallSpan is the span of one call; its methods are safe on nil.
type CallSpan struct {
	span trace.Span
}

// StartCall starts the server span of one brokered call under any trace
// context already in ctx (see Extract) and returns the context that carries
// it: pass that context on to Inject.
func (t *Tracer) StartCall(ctx context.Context, c Call) (context.Context, *CallSpan) {
	if t == nil {
		return ctx, nil
	}
	name := c.Method
	if c.Target != "" {
		name += " " + c.Target
	}
	attrs := []attribute.KeyValue{
		attribute.String("mcp.method.name", c.Method),
		attribute.String("mcpbroker.server", c.Server),
		attribute.String("mcpbroker.call.id", c.CallID),
		attribute.Int("mcpbroker.chain.depth", c.ChainDepth),
	}
	if c.Method == "tools/call" {
		attrs = append(attrs, attribute.String("gen_ai.tool.name", c.Target), attribute.String("gen_ai.operation.name", "execute_tool"))
	} else if c.Target != "" {
		attrs = append(attrs, attribute.String("mcp.target", c.Target))
	}
	if c.Session != "" {
		attrs = append(attrs, attribute.String("mcp.session.id", c.Session))
	}
	if c.RequestID != "" {
		attrs = append(attrs, attribute.String("jsonrpc.request.id", c.RequestID))
	}
	ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	return ctx, &CallSpan{span: span}
}

// Decided records the decision, its stable reason code and the determining
// policy IDs (never policy text).
func (s *CallSpan) Decided(decision, reason string, policyIDs []string) {
	if s == nil {
		return
	}
	s.span.SetAttributes(
		attribute.String("mcpbroker.decision", decision),
		attribute.StringSlice("mcpbroker.policy.ids", policyIDs),
	)
	if reason != "" {
		s.span.SetAttributes(attribute.String("mcpbroker.reason", reason))
	}
}

// End ends the span with the outcome status (the audit status) and, for a
// failure, its stable error class as error.type. Error text is not
// recorded: it may come from a downstream server.
func (s *CallSpan) End(status, errorClass string) {
	if s == nil {
		return
	}
	if status != "" {
		s.span.SetAttributes(attribute.String("mcpbroker.status", status))
	}
	if errorClass != "" {
		s.span.SetAttributes(attribute.String("error.type", errorClass))
		s.span.SetStatus(codes.Error, errorClass)
	}
	s.span.End()
}

// metaCarrier adapts an MCP _meta map to a TextMapCarrier: W3C keys
// "traceparent" and "tracestate" as string values.
type metaCarrier map[string]any

func (m metaCarrier) Get(k string) string {
	s, _ := m[k].(string)
	return s
}
func (m metaCarrier) Set(k, v string) { m[k] = v }
func (m metaCarrier) Keys() []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Inject writes the W3C trace context of ctx ("traceparent", and
// "tracestate" when set) into meta, the forwarded request's _meta. It
// writes nothing when ctx carries no sampled or remote span; meta must be
// non-nil.
func (t *Tracer) Inject(ctx context.Context, meta map[string]any) {
	if t == nil || meta == nil {
		return
	}
	t.prop.Inject(ctx, metaCarrier(meta))
}

// Extract returns ctx with the remote span context found in an incoming
// request's _meta (an agent that traces its own calls), so the call span
// continues the agent's trace.
func (t *Tracer) Extract(ctx context.Context, meta map[string]any) context.Context {
	if t == nil || meta == nil {
		return ctx
	}
	return t.prop.Extract(ctx, metaCarrier(meta))
}
