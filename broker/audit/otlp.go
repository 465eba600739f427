package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	common "go.opentelemetry.io/proto/otlp/common/v1"
	logs "go.opentelemetry.io/proto/otlp/logs/v1"
	resource "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"
)

// OTLPOptions configure ExportOTLP.
type OTLPOptions struct {
	// Endpoint is the full OTLP/HTTP logs URL, e.g.
	// http://collector:4318/v1/logs.
	Endpoint string
	Headers  map[string]string
	Client   *http.Client // nil: a client with a 30 s timeout
	// Batch is the number of records per request (default 500).
	Batch   int
	Version string // service.version
}

// ExportOTLP sends exported ledger records (the JSONL that Export writes)
// to an OTLP/HTTP logs endpoint, one log record per ledger entry: the body
// is the exported line itself (so a SIEM can re-verify the chain), and
// seq, type, call ID, decision and the evidenced controls are attributes.
// It returns how many records were accepted and the last sequence number
// sent, so an interrupted export resumes with --since last+1.
func ExportOTLP(ctx context.Context, jsonl io.Reader, o OTLPOptions) (n int, last uint64, err error) {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	res := &resource.Resource{Attributes: []*common.KeyValue{
		str("service.name", "mcpbroker"), str("service.version", o.Version),
	}}
	var batch []*logs.LogRecord
	var batchLast uint64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		req := &collogs.ExportLogsServiceRequest{ResourceLogs: []*logs.ResourceLogs{{
			Resource: res,
			ScopeLogs: []*logs.ScopeLogs{{
				Scope:      &common.InstrumentationScope{Name: "mcpbroker.audit", Version: fmt.Sprint(EventVersion)},
				LogRecords: batch,
			}},
		}}}
		body, err := proto.Marshal(req)
		if err != nil {
			return err
		}
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, o.Endpoint, bytes.NewReader(body))
		if err != nil {
			return err
		}
		hreq.Header.Set("Content-Type", "application/x-protobuf")
		for k, v := range o.Headers {
			hreq.Header.Set(k, v)
		}
		resp, err := o.Client.Do(hreq)
		if err != nil {
			return fmt.Errorf("otlp export: %w", err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("otlp export: %s refused the batch: %s", o.Endpoint, resp.Status)
		}
		n += len(batch)
		last = batchLast
		batch = batch[:0]
		return nil
	}
	sc := bufio.NewScanner(jsonl)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if isTrailer(line) {
			continue // a sealed export's trailer is not an event
		}
		var rec struct {
			Seq      uint64   `json:"seq"`
			Event    Event    `json:"event"`
			Controls []string `json:"controls"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			return n, last, fmt.Errorf("export line after seq %d: %w", last, err)
		}
		attrs := []*common.KeyValue{
			intKV("mcpbroker.seq", int64(rec.Seq)),
			str("event.name", string(rec.Event.Type)),
		}
		for k, v := range map[string]string{
			"mcpbroker.call_id": rec.Event.CallID, "mcpbroker.decision": rec.Event.Decision,
			"mcpbroker.reason": rec.Event.Reason, "mcpbroker.agent": rec.Event.Agent,
			"mcpbroker.initiator": rec.Event.Initiator, "mcpbroker.target": rec.Event.Target,
		} {
			if v != "" {
				attrs = append(attrs, str(k, v))
			}
		}
		if len(rec.Controls) > 0 {
			vals := make([]*common.AnyValue, len(rec.Controls))
			for i, c := range rec.Controls {
				vals[i] = &common.AnyValue{Value: &common.AnyValue_StringValue{StringValue: c}}
			}
			attrs = append(attrs, &common.KeyValue{Key: "mcpbroker.controls",
				Value: &common.AnyValue{Value: &common.AnyValue_ArrayValue{ArrayValue: &common.ArrayValue{Values: vals}}}})
		}
		sev, sevText := logs.SeverityNumber_SEVERITY_NUMBER_INFO, "INFO"
		if rec.Event.Decision == DecisionDeny || rec.Event.Type == AuthFailed {
			sev, sevText = logs.SeverityNumber_SEVERITY_NUMBER_WARN, "WARN"
		}
		batch = append(batch, &logs.LogRecord{
			TimeUnixNano:         uint64(rec.Event.Time.UnixNano()),
			ObservedTimeUnixNano: uint64(time.Now().UnixNano()),
			SeverityNumber:       sev,
			SeverityText:         sevText,
			Body:                 &common.AnyValue{Value: &common.AnyValue_StringValue{StringValue: string(line)}},
			Attributes:           attrs,
		})
		batchLast = rec.Seq
		if len(batch) >= o.Batch {
			if err := flush(); err != nil {
				return n, last, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return n, last, err
	}
	return n, last, flush()
}

func str(k, v string) *common.KeyValue {
	return &common.KeyValue{Key: k, Value: &common.AnyValue{Value: &common.AnyValue_StringValue{StringValue: v}}}
}

func intKV(k string, v int64) *common.KeyValue {
	return &common.KeyValue{Key: k, Value: &common.AnyValue{Value: &common.AnyValue_IntValue{IntValue: v}}}
}
