package audit

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpbroker/mcpbroker/broker/store"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

var t0 = time.Date(2026, 11, 26, 10, 22, 3, 123456789, time.UTC)

// fixedClock returns a clock that advances one millisecond per call.
func fixedClock() func() time.Time {
	var mu sync.Mutex
	now := t0
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Millisecond)
		return now
	}
}

// openStore opens a real bbolt file in t.TempDir and checks it in cleanup.
func openStore(t testing.TB, opts store.Options) *store.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(t.TempDir(), "broker.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("store Check: %v", err)
		}
		s.Close()
	})
	return s
}

func newLedger(t testing.TB) (*Ledger, *store.Store) {
	s := openStore(t, store.Options{})
	return NewLedger(s, nil, WithClock(fixedClock())), s
}

// goldenEvent uses every field, HTML-sensitive and non-ASCII characters, a
// fractional latency and a non-UTC time.
func goldenEvent() Event {
	return Event{
		Type:         CallDecided,
		Version:      EventVersion,
		Time:         time.Date(2026, 11, 26, 11, 22, 3, 120000000, time.FixedZone("CET", 3600)).UTC(),
		CallID:       "019abf0e-6a2b-7c3d-8e4f-0123456789ab",
		Session:      "sess-1",
		Agent:        "spiffe://example.org/agent/planner",
		Initiator:    `User::"alice"`,
		Tenant:       "acme",
		Chain:        []string{"spiffe://example.org/agent/planner", "spiffe://example.org/agent/coder"},
		Method:       "tools/call",
		Server:       "files",
		Target:       "files__read <a&b> é \u2028",
		ArgsDigest:   "hmac-sha256:00ff",
		Decision:     DecisionDeny,
		Reason:       "denied_by_policy",
		PolicyIDs:    []string{"forbid-secrets", "permit-read"},
		PolicyDigest: "sha256:abcd",
		Passes: []Pass{
			{Principal: `User::"alice"`, Allowed: true, Reasons: []string{"permit-read"}},
			{Principal: "spiffe://example.org/agent/coder", Allowed: false, Errors: []string{"e1"}},
		},
		Status:     StatusOK,
		ErrorClass: "none",
		LatencyMS:  12.5,
		Detail:     "line1\nline2\t\"quoted\"",
	}
}

func TestCanonicalGolden(t *testing.T) {
	canon, err := Canonical(goldenEvent())
	if err != nil {
		t.Fatal(err)
	}
	sum := entryHash(7, strings.Repeat("ab", 32), canon)
	got := fmt.Appendf(nil, "%s\nseq=7 prev=%s hash=%x\n", canon, strings.Repeat("ab", 32), sum)
	path := filepath.Join("testdata", "canonical_event.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("canonical bytes drifted: the chain format is frozen\ngot:\n%s\nwant:\n%s", got, want)
	}
	// Idempotent, and insensitive to key order and whitespace of the input.
	again, err := canonicalize(canon)
	if err != nil || !bytes.Equal(again, canon) {
		t.Fatalf("canonicalize not idempotent: %v\n%s", err, again)
	}
	shuffled := []byte(`{ "v": 1, "type": "call.decided", "time": "2026-11-26T10:22:03Z" }`)
	c, err := canonicalize(shuffled)
	if err != nil || string(c) != `{"time":"2026-11-26T10:22:03Z","type":"call.decided","v":1}` {
		t.Fatalf("canonicalize(shuffled) = %s, %v", c, err)
	}
}

func TestRecordAndList(t *testing.T) {
	l, s := newLedger(t)
	ctx := context.Background()
	evs := []Event{
		{Type: BrokerStarted},
		{Type: CallDecided, CallID: "c1", Agent: "a1", Initiator: "alice", Target: "t1", Decision: DecisionAllow, Session: "s1"},
		{Type: CallCompleted, CallID: "c1", Agent: "a1", Initiator: "alice", Target: "t1", Status: StatusOK, LatencyMS: 3.25, Session: "s1"},
		{Type: CallDecided, CallID: "c2", Agent: "a2", Initiator: "bob", Target: "t2", Decision: DecisionDeny, Reason: "denied_by_policy"},
	}
	var prev string
	for i, ev := range evs {
		e, err := l.Record(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		if e.Seq != uint64(i+1) || e.Prev != prev || len(e.Hash) != 64 {
			t.Fatalf("entry %d = seq %d prev %q hash %q", i, e.Seq, e.Prev, e.Hash)
		}
		if e.Event.Version != EventVersion || e.Event.Time.IsZero() || e.Event.Time.Location() != time.UTC {
			t.Fatalf("entry %d event not stamped: %+v", i, e.Event)
		}
		prev = e.Hash
	}
	for _, tc := range []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"all", Filter{}, []uint64{1, 2, 3, 4}},
		{"type", Filter{Type: CallDecided}, []uint64{2, 4}},
		{"call", Filter{CallID: "c1"}, []uint64{2, 3}},
		{"agent and decision", Filter{Agent: "a2", Decision: DecisionDeny}, []uint64{4}},
		{"initiator", Filter{Initiator: "alice"}, []uint64{2, 3}},
		{"target", Filter{Target: "t2"}, []uint64{4}},
		{"session", Filter{Session: "s1"}, []uint64{2, 3}},
		{"limit keeps latest", Filter{Limit: 2}, []uint64{3, 4}},
		{"since inclusive", Filter{Since: t0.Add(2 * time.Millisecond)}, []uint64{2, 3, 4}},
		{"until exclusive", Filter{Until: t0.Add(2 * time.Millisecond)}, []uint64{1}},
		{"none", Filter{Agent: "nobody"}, []uint64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := l.List(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if seqs := seqsOf(got); fmt.Sprint(seqs) != fmt.Sprint(tc.want) {
				t.Fatalf("seqs = %v, want %v", seqs, tc.want)
			}
		})
	}
	all, err := List(s, Filter{})
	if err != nil || len(all) != 4 || all[2].Event.LatencyMS != 3.25 || all[3].Event.Reason != "denied_by_policy" {
		t.Fatalf("List = %+v, %v", all, err)
	}
	if _, err := List(s, Filter{Type: "bogus"}); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("List with bad type = %v", err)
	}
	if n, err := Verify(s); n != 4 || err != nil {
		t.Fatalf("Verify = %d, %v", n, err)
	}
}

func seqsOf(es []Entry) []uint64 {
	out := []uint64{}
	for _, e := range es {
		out = append(out, e.Seq)
	}
	return out
}

func TestRecordRejectsInvalid(t *testing.T) {
	l, s := newLedger(t)
	for _, ev := range []Event{
		{Type: "call.bogus"},
		{Type: ""},
		{Type: CallDecided, Decision: "maybe"},
		{Type: CallCompleted, Status: "fine"},
	} {
		if _, err := l.Record(context.Background(), ev); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("Record(%+v) = %v, want ErrInvalidEvent", ev, err)
		}
	}
	if n, _ := s.LedgerLen(); n != 0 {
		t.Fatalf("invalid events were written: %d", n)
	}
	if n, err := Verify(s); n != 0 || err != nil {
		t.Fatalf("Verify(empty) = %d, %v", n, err)
	}
}

func TestRecordConcurrent(t *testing.T) {
	l, s := newLedger(t)
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := l.Record(context.Background(), Event{Type: CallDecided, CallID: fmt.Sprint(i), Decision: DecisionAllow}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	all, err := List(s, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]bool{}
	for i, e := range all {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, e.Seq)
		}
		calls[e.Event.CallID] = true
	}
	if len(all) != n || len(calls) != n {
		t.Fatalf("%d entries, %d distinct calls, want %d", len(all), len(calls), n)
	}
	if got, err := Verify(s); got != n || err != nil {
		t.Fatalf("Verify = %d, %v", got, err)
	}
}

func TestRecordClosedStoreFails(t *testing.T) {
	l, s := newLedger(t)
	s.Close()
	if _, err := l.Record(context.Background(), Event{Type: CallDecided}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Record on closed store = %v, want ErrClosed", err)
	}
}

func TestRecordCancelledContextStillWrites(t *testing.T) {
	l, s := newLedger(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e, err := l.Record(ctx, Event{Type: CallCompleted, CallID: "c", Status: StatusCancelled})
	if err != nil {
		t.Fatal(err)
	}
	got, err := List(s, Filter{CallID: "c"})
	if err != nil || len(got) != 1 || got[0].Seq != e.Seq {
		t.Fatalf("List = %+v, %v", got, err)
	}
}

func TestVerifyNamesTamperedSeq(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	record := func(n int) {
		s, err := store.Open(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		l := NewLedger(s, nil, WithClock(fixedClock()))
		for i := 1; i <= n; i++ {
			if _, err := l.Record(context.Background(), Event{Type: CallDecided, CallID: fmt.Sprintf("call-%02d", i), Decision: DecisionAllow}); err != nil {
				t.Fatal(err)
			}
		}
	}
	record(10)
	// Tamper as an attacker with the file would: edit the bytes on disk.
	// bbolt keeps stale copies of pages, so replace every occurrence.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.ReplaceAll(raw, []byte(`"call_id":"call-07","decision":"allow"`), []byte(`"call_id":"call-07","decision":"deny!"`))
	if bytes.Equal(raw, tampered) {
		t.Fatal("entry 7 not found in the file")
	}
	if err := os.WriteFile(path, tampered, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	n, err := Verify(s)
	var ce *ChainError
	if !errors.As(err, &ce) || ce.Seq != 7 || n != 6 || !errors.Is(err, ErrChainBroken) {
		t.Fatalf("Verify = %d, %v; want seq 7 named", n, err)
	}
	if !strings.Contains(err.Error(), "seq 7") {
		t.Fatalf("error does not name seq 7: %v", err)
	}
}

func TestHandlerListRemote(t *testing.T) {
	l, _ := newLedger(t)
	for i := range 5 {
		d := DecisionAllow
		if i%2 == 1 {
			d = DecisionDeny
		}
		if _, err := l.Record(context.Background(), Event{Type: CallDecided, CallID: fmt.Sprint(i), Agent: "a", Decision: d}); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "sock") // unix socket paths are limited to ~108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(l), ReadHeaderTimeout: time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	ctx := context.Background()
	got, err := ListRemote(ctx, sock, Filter{Decision: DecisionDeny, Agent: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqsOf(got)) != "[2 4]" {
		t.Fatalf("remote deny seqs = %v", seqsOf(got))
	}
	local, _ := l.List(ctx, Filter{Decision: DecisionDeny, Agent: "a"})
	for i := range got {
		if got[i].Hash != local[i].Hash || !got[i].Event.Time.Equal(local[i].Event.Time) {
			t.Fatalf("remote entry %d differs: %+v vs %+v", i, got[i], local[i])
		}
	}
	if got, err := ListRemote(ctx, sock, Filter{Limit: 2, Since: t0}); err != nil || fmt.Sprint(seqsOf(got)) != "[4 5]" {
		t.Fatalf("limit: %v %v", seqsOf(got), err)
	}
	if got, err := ListRemote(ctx, sock, Filter{CallID: "none"}); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("empty: %#v %v", got, err)
	}
	resp, err := httpOverUnix(sock, AuditPath+"?bogus=1")
	if err != nil || resp != http.StatusBadRequest {
		t.Fatalf("unknown parameter: %d %v", resp, err)
	}
	if _, err := ListRemote(ctx, filepath.Join(dir, "missing.sock"), Filter{}); err == nil {
		t.Fatal("ListRemote to a missing socket succeeded")
	}
}

func httpOverUnix(sock, path string) (int, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://x" + path)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestHasher(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "digest.key")
	h1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := info.Mode().Perm(); m != 0o600 || info.Size() != KeySize {
		t.Fatalf("key file mode %o size %d", m, info.Size())
	}
	h2, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	d := h1.Digest([]byte(`{"path":"/etc/passwd"}`))
	if !strings.HasPrefix(d, DigestPrefix) || len(d) != len(DigestPrefix)+64 {
		t.Fatalf("digest = %q", d)
	}
	if h2.Digest([]byte(`{"path":"/etc/passwd"}`)) != d {
		t.Fatal("digest not stable across loads")
	}
	if h1.Digest([]byte(`{"path":"/etc/shadow"}`)) == d {
		t.Fatal("different inputs, same digest")
	}
	other, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	if other.Digest([]byte(`{"path":"/etc/passwd"}`)) == d {
		t.Fatal("different keys, same digest")
	}
	if s := fmt.Sprintf("%v %+v", h1, h1); strings.Contains(s, string(h1.key)) || !strings.Contains(s, "redacted") {
		t.Fatalf("Hasher prints %q", s)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path); err == nil {
		t.Fatal("group/world-readable key accepted")
	}
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("too short"), 0o600)
	if _, err := LoadOrCreateKey(short); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestHasherConcurrentCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "digest.key")
	var wg sync.WaitGroup
	digests := make([]string, 8)
	for i := range digests {
		wg.Go(func() {
			h, err := LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
				return
			}
			digests[i] = h.Digest([]byte("x"))
		})
	}
	wg.Wait()
	for _, d := range digests {
		if d != digests[0] {
			t.Fatal("racing creators ended with different keys")
		}
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	err := WriteTable(&buf, []Entry{
		{Seq: 1, Event: Event{Type: CallDecided, Time: t0, CallID: "c1", Agent: "a", Initiator: "alice", Target: "evil\x1b[2Jtool", Decision: DecisionDeny, Reason: "denied_by_policy", PolicyIDs: []string{"p1", "p2"}}},
		{Seq: 2, Event: Event{Type: CallCompleted, Time: t0, CallID: "c1", Status: StatusOK, LatencyMS: 12.345}},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("want header + 2 lines:\n%s", out)
	}
	for _, want := range []string{"2026-11-26T10:22:03.123Z", "call.decided", "denied_by_policy", "p1,p2", "12.3ms", `"evil\x1b[2Jtool"`, " ok "} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Error("control character reached the terminal")
	}
}

func FuzzCanonicalize(f *testing.F) {
	c, _ := Canonical(goldenEvent())
	f.Add(c)
	f.Add([]byte(`{"b":1e3,"a":[{"z":null,"y":"\u003c"}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c1, err := canonicalize(raw)
		if err != nil {
			return
		}
		c2, err := canonicalize(c1)
		if err != nil || !bytes.Equal(c1, c2) {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", raw, c1, c2, err)
		}
	})
}

func benchRecord(b *testing.B, parallel bool) {
	s := openStore(b, store.Options{})
	l := NewLedger(s, nil)
	ev := Event{Type: CallDecided, CallID: "019abf0e-6a2b-7c3d-8e4f-0123456789ab", Agent: "spiffe://example.org/agent/planner",
		Initiator: `User::"alice"`, Method: "tools/call", Server: "files", Target: "files__read", Decision: DecisionAllow,
		ArgsDigest: "hmac-sha256:" + strings.Repeat("0f", 32), PolicyIDs: []string{"permit-read"}}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		b.SetParallelism(32) // 32 × GOMAXPROCS concurrent calls share commits
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Record(ctx, ev); err != nil {
					b.Error(err)
					return
				}
			}
		})
	} else {
		for b.Loop() {
			if _, err := l.Record(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkRecordParallel measures group commit: many callers, one fsync per batch.
func BenchmarkRecordParallel(b *testing.B) { benchRecord(b, true) }

// BenchmarkRecordSerial measures one caller: one batch delay and fsync per record.
func BenchmarkRecordSerial(b *testing.B) { benchRecord(b, false) }
