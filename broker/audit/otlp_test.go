package audit

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/protobuf/proto"
)

// TestExportOTLP sends an exported ledger to an in-test OTLP/HTTP logs
// receiver on loopback, in batches, and checks that every entry arrived
// whole (the body re-verifies) with its attributes.
func TestExportOTLP(t *testing.T) {
	l, st := newLedger(t)
	ctx := context.Background()
	for i := range 7 {
		ev := Event{Type: CallDecided, CallID: "c" + string(rune('0'+i)), Agent: "spiffe://t/agent/a", Decision: DecisionAllow}
		if i == 3 {
			ev.Decision = DecisionDeny
			ev.Reason = "denied_by_policy"
		}
		if _, err := l.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	var jsonl bytes.Buffer
	if _, _, err := Export(ctx, st, &jsonl, ExportOptions{}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var bodies []string
	var requests int
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/logs" || r.Header.Get("Content-Type") != "application/x-protobuf" || r.Header.Get("X-Tenant") != "acme" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var req collogs.ExportLogsServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		requests++
		for _, rl := range req.ResourceLogs {
			for _, sl := range rl.ScopeLogs {
				for _, lr := range sl.LogRecords {
					bodies = append(bodies, lr.Body.GetStringValue())
					var seq int64 = -1
					for _, kv := range lr.Attributes {
						if kv.Key == "mcpbroker.seq" {
							seq = kv.Value.GetIntValue()
						}
					}
					if seq <= 0 || lr.TimeUnixNano == 0 {
						t.Errorf("record without seq or time: %v", lr)
					}
				}
			}
		}
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	defer srv.Close()

	n, last, err := ExportOTLP(ctx, bytes.NewReader(jsonl.Bytes()), OTLPOptions{
		Endpoint: srv.URL + "/v1/logs", Headers: map[string]string{"X-Tenant": "acme"}, Batch: 3, Version: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(jsonl.String()), "\n")
	if n != len(lines) || last != uint64(len(lines)) || requests != 3 {
		t.Fatalf("sent %d (last %d) in %d requests, want %d in 3", n, last, requests, len(lines))
	}
	// What the collector received is the export itself: it verifies.
	if _, err := VerifyJSONL(strings.NewReader(strings.Join(bodies, "\n")+"\n"), VerifyOptions{}); err != nil {
		t.Fatalf("received records do not verify: %v", err)
	}
	// A refusing collector is an error naming it, with the resume point.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer bad.Close()
	if _, _, err := ExportOTLP(ctx, bytes.NewReader(jsonl.Bytes()), OTLPOptions{Endpoint: bad.URL}); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("refused export: %v", err)
	}
}
