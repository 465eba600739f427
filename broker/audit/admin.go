package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// AuditPath is the admin endpoint served by Handler.
const AuditPath = "/v1/audit"

// MaxRemoteLimit caps the entries one Handler response carries; a request
// without a limit gets the most recent MaxRemoteLimit matches.
const MaxRemoteLimit = 10000

// maxResponseBytes bounds what ListRemote reads.
const maxResponseBytes = 256 << 20

// Handler serves GET /v1/audit for the CLI while the broker holds the store
// lock. Query parameters: type, agent, initiator, call_id, decision, target,
// session, since and until (RFC 3339), limit. The response is a JSON array of
// Entry in ascending sequence order; a bad parameter is a 400 with
// {"error": ...}.
//
// Handler does no authentication of its own: serve it only on a unix socket
// that only the broker's user can open (mode 0600 in a 0700 data dir).
func Handler(l *Ledger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+AuditPath, func(w http.ResponseWriter, r *http.Request) {
		f, err := parseFilter(r.URL.Query())
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		entries, err := l.List(r.Context(), f)
		if err != nil {
			l.log.Error("audit list failed", "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal"})
			return
		}
		writeJSON(w, http.StatusOK, entries)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func parseFilter(q url.Values) (Filter, error) {
	for k := range q {
		switch k {
		case "type", "agent", "initiator", "call_id", "decision", "target", "session", "since", "until", "limit":
		default:
			return Filter{}, fmt.Errorf("unknown parameter %q", k)
		}
	}
	f := Filter{
		Type:      Type(q.Get("type")),
		Agent:     q.Get("agent"),
		Initiator: q.Get("initiator"),
		CallID:    q.Get("call_id"),
		Decision:  q.Get("decision"),
		Target:    q.Get("target"),
		Session:   q.Get("session"),
		Limit:     MaxRemoteLimit,
	}
	var err error
	if v := q.Get("since"); v != "" {
		if f.Since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return Filter{}, fmt.Errorf("since: %w", err)
		}
	}
	if v := q.Get("until"); v != "" {
		if f.Until, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return Filter{}, fmt.Errorf("until: %w", err)
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxRemoteLimit {
			return Filter{}, fmt.Errorf("limit must be 1..%d", MaxRemoteLimit)
		}
		f.Limit = n
	}
	return f, f.Validate()
}

func filterQuery(f Filter) url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("type", string(f.Type))
	set("agent", f.Agent)
	set("initiator", f.Initiator)
	set("call_id", f.CallID)
	set("decision", f.Decision)
	set("target", f.Target)
	set("session", f.Session)
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format(time.RFC3339Nano))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// ListRemote asks the broker listening on the unix socket at socketPath for
// the entries matching f. f.Limit 0 means the server's cap, MaxRemoteLimit.
func ListRemote(ctx context.Context, socketPath string, f Filter) ([]Entry, error) {
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("list remote audit: %w", err)
	}
	if f.Limit > MaxRemoteLimit {
		return nil, fmt.Errorf("list remote audit: limit above %d", MaxRemoteLimit)
	}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
	}
	defer tr.CloseIdleConnections()
	u := url.URL{Scheme: "http", Host: "mcpbroker", Path: AuditPath, RawQuery: filterQuery(f).Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("list remote audit: %w", err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("list remote audit via %s: %w", socketPath, err)
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxResponseBytes)
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(body).Decode(&e)
		return nil, fmt.Errorf("list remote audit: broker answered %s: %s", resp.Status, e.Error)
	}
	var entries []Entry
	if err := json.NewDecoder(body).Decode(&entries); err != nil {
		return nil, fmt.Errorf("list remote audit: decode: %w", err)
	}
	if entries == nil {
		entries = []Entry{}
	}
	return entries, nil
}
