package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// AuditPath is the admin endpoint served by Handler; its sub-paths
// VerifyPath and ExportPath are served too, so mount Handler at both
// AuditPath and AuditPath+"/".
const AuditPath = "/v1/audit"

// Sub-paths served by Handler.
const (
	VerifyPath = AuditPath + "/verify"
	ExportPath = AuditPath + "/export"
)

// MaxRemoteLimit caps the entries one Handler response carries; a request
// without a limit gets the most recent MaxRemoteLimit matches.
const MaxRemoteLimit = 10000

// maxResponseBytes bounds what ListRemote reads.
const maxResponseBytes = 256 << 20

// Handler serves the CLI while the broker holds the store lock:
//
//   - GET /v1/audit: entries matching the query parameters type, agent,
//     initiator, call_id, decision, target, session, tenant, server, method,
//     chain, status, reason, from and to (sequence numbers), since and until
//     (RFC 3339), limit; a JSON array of Entry in ascending sequence order.
//   - GET /v1/audit/verify: VerifyResult of Ledger.Verify.
//   - GET /v1/audit/export?from=SEQ&to=SEQ&since=TIME: Export JSONL.
//
// A bad parameter is a 400 with {"error": ...}.
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
	mux.HandleFunc("GET "+VerifyPath, func(w http.ResponseWriter, r *http.Request) {
		rep, err := l.Verify()
		var ce *ChainError
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, VerifyResult{OK: true, Report: rep})
		case errors.As(err, &ce):
			writeJSON(w, http.StatusOK, VerifyResult{Report: rep, Seq: ce.Seq, Reason: ce.Reason})
		default:
			l.log.Error("audit verify failed", "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal"})
		}
	})
	mux.HandleFunc("GET "+ExportPath, func(w http.ResponseWriter, r *http.Request) {
		opts, err := parseExport(r.URL.Query())
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		w.Header().Set("Content-Type", "application/jsonl")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		opts.Signer = l.signer // sealed, when the ledger signs
		if _, _, err := Export(r.Context(), l.store, w, opts); err != nil {
			// Headers are gone: the client sees a short body and checks
			// the chain it got.
			l.log.Error("audit export failed", "err", err)
		}
	})
	return mux
}

// VerifyResult is the answer of GET /v1/audit/verify.
type VerifyResult struct {
	OK     bool   `json:"ok"`
	Report Report `json:"report"`
	Seq    uint64 `json:"seq,omitempty"`    // first bad sequence number
	Reason string `json:"reason,omitempty"` // what is wrong with it
}

// Err returns the *ChainError a failed result describes, or nil.
func (v VerifyResult) Err() error {
	if v.OK {
		return nil
	}
	return &ChainError{Seq: v.Seq, Reason: v.Reason}
}

// Verify verifies the live ledger with the ledger's own signing key pinned
// and its anchor file (WithAnchorFile) if one was written.
func (l *Ledger) Verify() (Report, error) {
	var opts VerifyOptions
	if l.signer != nil {
		opts.PublicKey = l.signer.PublicKey()
	}
	if l.anchor != "" {
		if a, err := ReadAnchor(l.anchor); err == nil {
			opts.Anchor = a
		} else if !errors.Is(err, fs.ErrNotExist) {
			return Report{}, err
		}
	}
	return VerifyStore(l.store, opts)
}

func parseExport(q url.Values) (ExportOptions, error) {
	var o ExportOptions
	for k := range q {
		switch k {
		case "from", "to", "since":
		default:
			return o, fmt.Errorf("unknown parameter %q", k)
		}
	}
	var err error
	if v := q.Get("from"); v != "" {
		if o.From, err = strconv.ParseUint(v, 10, 64); err != nil {
			return o, fmt.Errorf("from: %w", err)
		}
	}
	if v := q.Get("to"); v != "" {
		if o.To, err = strconv.ParseUint(v, 10, 64); err != nil {
			return o, fmt.Errorf("to: %w", err)
		}
	}
	if v := q.Get("since"); v != "" {
		if o.Since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return o, fmt.Errorf("since: %w", err)
		}
	}
	return o, nil
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
		case "type", "agent", "initiator", "call_id", "decision", "target", "session", "since", "until", "limit",
			"tenant", "server", "method", "chain", "status", "reason", "from", "to":
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
		Tenant:    q.Get("tenant"),
		Server:    q.Get("server"),
		Method:    q.Get("method"),
		Chain:     q.Get("chain"),
		Status:    q.Get("status"),
		Reason:    q.Get("reason"),
		Limit:     MaxRemoteLimit,
	}
	var err error
	if v := q.Get("from"); v != "" {
		if f.FromSeq, err = strconv.ParseUint(v, 10, 64); err != nil {
			return Filter{}, fmt.Errorf("from: %w", err)
		}
	}
	if v := q.Get("to"); v != "" {
		if f.ToSeq, err = strconv.ParseUint(v, 10, 64); err != nil {
			return Filter{}, fmt.Errorf("to: %w", err)
		}
	}
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
	set("tenant", f.Tenant)
	set("server", f.Server)
	set("method", f.Method)
	set("chain", f.Chain)
	set("status", f.Status)
	set("reason", f.Reason)
	if f.FromSeq > 0 {
		q.Set("from", strconv.FormatUint(f.FromSeq, 10))
	}
	if f.ToSeq > 0 {
		q.Set("to", strconv.FormatUint(f.ToSeq, 10))
	}
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
	var entries []Entry
	err := getRemote(ctx, socketPath, AuditPath, filterQuery(f), func(body io.Reader) error {
		return json.NewDecoder(body).Decode(&entries)
	})
	if err != nil {
		return nil, fmt.Errorf("list remote audit: %w", err)
	}
	if entries == nil {
		entries = []Entry{}
	}
	return entries, nil
}

// VerifyRemote asks the broker at socketPath to verify its live ledger.
func VerifyRemote(ctx context.Context, socketPath string) (VerifyResult, error) {
	var res VerifyResult
	err := getRemote(ctx, socketPath, VerifyPath, nil, func(body io.Reader) error {
		return json.NewDecoder(body).Decode(&res)
	})
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify remote audit: %w", err)
	}
	return res, nil
}

// ExportRemote streams the broker's Export JSONL for opts to w. It returns
// the number of lines and the last sequence number copied.
func ExportRemote(ctx context.Context, socketPath string, w io.Writer, opts ExportOptions) (n int, last uint64, err error) {
	q := url.Values{}
	if opts.From > 0 {
		q.Set("from", strconv.FormatUint(opts.From, 10))
	}
	if opts.To > 0 {
		q.Set("to", strconv.FormatUint(opts.To, 10))
	}
	if !opts.Since.IsZero() {
		q.Set("since", opts.Since.UTC().Format(time.RFC3339Nano))
	}
	err = getRemote(ctx, socketPath, ExportPath, q, func(body io.Reader) error {
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
		for sc.Scan() {
			if isTrailer(sc.Bytes()) { // passed on, not counted
				if _, err := w.Write(append(sc.Bytes(), '\n')); err != nil {
					return err
				}
				continue
			}
			var head struct {
				Seq uint64 `json:"seq"`
			}
			if err := json.Unmarshal(sc.Bytes(), &head); err != nil {
				return fmt.Errorf("line %d: %w", n+1, err)
			}
			if _, err := w.Write(append(sc.Bytes(), '\n')); err != nil {
				return err
			}
			n++
			last = head.Seq
		}
		return sc.Err()
	})
	if err != nil {
		return n, last, fmt.Errorf("export remote audit: %w", err)
	}
	return n, last, nil
}

// ErrNoEndpoint is returned (wrapped) by the remote calls when the broker
// answers 404: it is older than this CLI or does not mount the path.
var ErrNoEndpoint = errors.New("broker does not serve this audit endpoint")

// getRemote GETs path over the unix socket and hands a 200 body to read.
func getRemote(ctx context.Context, socketPath, path string, q url.Values, read func(io.Reader) error) error {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
	}
	defer tr.CloseIdleConnections()
	u := url.URL{Scheme: "http", Host: "mcpbroker", Path: path, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("via %s: %w", socketPath, err)
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	if path != ExportPath { // an export streams through; everything else is held in memory
		body = io.LimitReader(resp.Body, maxResponseBytes)
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s: %w", path, ErrNoEndpoint)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(body).Decode(&e)
		return fmt.Errorf("broker answered %s: %s", resp.Status, e.Error)
	}
	if err := read(body); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}
