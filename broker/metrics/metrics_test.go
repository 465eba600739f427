package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	return rec.Body.String()
}

func TestMetrics(t *testing.T) {
	m := New()
	m.CallDecided("allow", "", 40*time.Microsecond)
	m.CallDecided("deny", "denied_by_policy", 50*time.Microsecond)
	m.CallDecided("deny", "denied_by_policy", 60*time.Microsecond)
	m.Downstream("notes", "ok", 3*time.Millisecond)
	m.ApprovalWait("approved", 4*time.Second)
	m.StoreCommit(42, 2*time.Millisecond, nil)
	m.StoreCommit(0, time.Millisecond, errors.New("disk full"))
	m.DownstreamHealth("notes", true)
	m.DownstreamHealth("payments", false)
	m.PolicyReload(true)
	m.PolicyReload(false)
	m.PendingApprovals(3)
	m.LedgerSize(func() (int64, error) { return 65536, nil })
	body := scrape(t, m.Handler())
	for _, want := range []string{
		`mcpbroker_calls_total{decision="deny",reason="denied_by_policy"} 2`,
		`mcpbroker_calls_total{decision="allow",reason=""} 1`,
		`mcpbroker_policy_duration_seconds_count 3`,
		`mcpbroker_downstream_duration_seconds_count{server="notes",status="ok"} 1`,
		`mcpbroker_approval_wait_seconds_count{outcome="approved"} 1`,
		`mcpbroker_store_commit_duration_seconds_count 1`,
		`mcpbroker_store_last_commit_duration_seconds 0.002`,
		`mcpbroker_store_commit_errors_total 1`,
		`mcpbroker_ledger_entries 42`,
		`mcpbroker_store_size_bytes 65536`,
		`mcpbroker_downstream_up{server="payments"} 0`,
		`mcpbroker_policy_reloads_total{result="rejected"} 1`,
		`mcpbroker_approvals_pending 3`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// nil Metrics is a no-op everywhere.
	var nm *Metrics
	nm.CallDecided("allow", "", time.Millisecond)
	nm.StoreCommit(1, time.Millisecond, nil)
	nm.LedgerSize(nil)
	if rec := httptest.NewRecorder(); func() int { nm.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil)); return rec.Code }() != 404 {
		t.Error("nil Metrics handler should 404")
	}
}

func TestReadiness(t *testing.T) {
	var r Readiness
	var storeErr error
	var mu sync.Mutex
	r.Add("policy", func(context.Context) error { return nil })
	r.Add("store", func(context.Context) error { mu.Lock(); defer mu.Unlock(); return storeErr })
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get(); code != 200 || !strings.Contains(body, `"ready":true`) {
		t.Fatalf("ready: %d %s", code, body)
	}
	mu.Lock()
	storeErr = errors.New("store not writable")
	mu.Unlock()
	if code, body := get(); code != 503 || !strings.Contains(body, `"store":"store not writable"`) {
		t.Fatalf("not ready: %d %s", code, body)
	}
	rec := httptest.NewRecorder()
	Healthz().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 200 {
		t.Fatalf("healthz %d", rec.Code)
	}
}

func TestTracingConfigFromEnv(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		enabled bool
		wantErr bool
		check   func(TracingConfig) bool
	}{
		{"nothing set: off", nil, false, false, nil},
		{"exporter otlp, default endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true, false,
			func(c TracingConfig) bool { return c.Endpoint == "" }},
		{"endpoint alone turns it on", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, true, false,
			func(c TracingConfig) bool { return c.Endpoint == "http://collector:4318/v1/traces" }},
		{"traces endpoint wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b/x"}, true, false,
			func(c TracingConfig) bool { return c.Endpoint == "https://b/x" }},
		{"none wins", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a"}, false, false, nil},
		{"sdk disabled", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false, false, nil},
		{"headers", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b, x=y"}, true, false,
			func(c TracingConfig) bool { return c.Headers["api-key"] == "a b" && c.Headers["x"] == "y" }},
		{"grpc refused", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, false, true, nil},
		{"zipkin refused", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, true, nil},
		{"bad endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, false, true, nil},
		{"bad sampler", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"}, false, true, nil},
		{"ratio sampler", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, true, false,
			func(c TracingConfig) bool { return c.SamplerArg == 0.25 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := TracingConfigFromEnv(func(k string) string { return tc.env[k] })
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (c.Enabled != tc.enabled || (tc.check != nil && !tc.check(c))) {
				t.Fatalf("config = %+v", c)
			}
		})
	}
}

// TestTracingExportsOTLP runs a tiny OTLP/HTTP receiver on loopback and
// checks that a call span arrives with its attributes, and that the W3C
// trace context lands in the forwarded request's _meta.
func TestTracingExportsOTLP(t *testing.T) {
	got := make(chan *coltrace.ExportTraceServiceRequest, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("receiver got %s %s %s", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		if r.Header.Get("Api-Key") != "k" {
			t.Errorf("header not sent: %v", r.Header)
		}
		b, _ := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			t.Errorf("decode: %v", err)
		}
		got <- &req
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Write(out)
	}))
	defer srv.Close()
	cfg, err := TracingConfigFromEnv(envMap{
		"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_EXPORTER_OTLP_HEADERS": "api-key=k", "OTEL_SERVICE_NAME": "broker-test",
	}.get)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tr, err := NewTracer(ctx, cfg, "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	// An agent's traceparent is continued.
	in := map[string]any{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	cctx, span := tr.StartCall(tr.Extract(ctx, in), Call{Method: "tools/call", Target: "notes__read_note", Server: "notes", CallID: "c1", ChainDepth: 1})
	span.Decided("allow", "", []string{"permit-read"})
	meta := map[string]any{}
	tr.Inject(cctx, meta)
	tp, _ := meta["traceparent"].(string)
	if !strings.HasPrefix(tp, "00-0af7651916cd43dd8448eb211c80319c-") || strings.HasSuffix(tp, "b7ad6b7169203331-01") {
		t.Fatalf("_meta traceparent = %q: want the agent's trace with the broker's span", tp)
	}
	span.End("ok", "")
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	var req *coltrace.ExportTraceServiceRequest
	select {
	case req = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no OTLP export arrived")
	}
	rs := req.GetResourceSpans()
	if len(rs) != 1 || len(rs[0].GetScopeSpans()) != 1 || len(rs[0].GetScopeSpans()[0].GetSpans()) != 1 {
		t.Fatalf("export = %v", req)
	}
	sp := rs[0].GetScopeSpans()[0].GetSpans()[0]
	if sp.GetName() != "tools/call notes__read_note" {
		t.Errorf("span name %q", sp.GetName())
	}
	attrs := map[string]string{}
	for _, kv := range sp.GetAttributes() {
		attrs[kv.GetKey()] = kv.GetValue().String()
	}
	for _, k := range []string{"mcp.method.name", "gen_ai.tool.name", "mcpbroker.decision", "mcpbroker.policy.ids", "mcpbroker.server", "mcpbroker.chain.depth"} {
		if _, ok := attrs[k]; !ok {
			t.Errorf("span lacks %s: %v", k, attrs)
		}
	}
	var svc string
	for _, kv := range rs[0].GetResource().GetAttributes() {
		if kv.GetKey() == "service.name" {
			svc = kv.GetValue().GetStringValue()
		}
	}
	if svc != "broker-test" {
		t.Errorf("service.name = %q", svc)
	}
}

type envMap map[string]string

func (e envMap) get(k string) string { return e[k] }

func TestTracingOff(t *testing.T) {
	tr, err := NewTracer(context.Background(), TracingConfig{}, "v")
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := tr.StartCall(context.Background(), Call{Method: "tools/call", Target: "x"})
	meta := map[string]any{}
	tr.Inject(ctx, meta)
	if len(meta) != 0 {
		t.Fatalf("disabled tracing injected %v", meta)
	}
	span.End("ok", "")
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	var nilT *Tracer
	_, s := nilT.StartCall(context.Background(), Call{})
	s.Decided("deny", "x", nil)
	s.End("error", "internal")
}
