package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpbroker/mcpbroker/broker/store"
)

func TestCanonicalGoldenArgs(t *testing.T) {
	// An event without Args keeps its old bytes (TestCanonicalGolden);
	// this one pins the bytes of the Args field and a checkpoint.
	ev := goldenEvent()
	ev.Args = map[string]string{"path": "/etc/<x>", "token": Redacted, "to": "hmac-sha256:00"}
	cp := &Checkpoint{Seq: 6, Hash: strings.Repeat("cd", 32), Key: "ed25519:" + strings.Repeat("01", 32), Sig: "ff"}
	var got []byte
	for _, e := range []Event{ev, {Type: LedgerCheckpoint, Version: EventVersion, Time: t0, Checkpoint: cp}} {
		canon, err := Canonical(e)
		if err != nil {
			t.Fatal(err)
		}
		sum := entryHash(7, strings.Repeat("ab", 32), canon)
		got = fmt.Appendf(got, "%s\nseq=7 prev=%s hash=%x\n", canon, strings.Repeat("ab", 32), sum)
	}
	path := filepath.Join("testdata", "canonical_event_args.golden")
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
}

func TestClassify(t *testing.T) {
	h := &Hasher{key: bytes.Repeat([]byte{7}, KeySize)}
	args := map[string]any{
		"path":     "/srv/a.txt",
		"API_Key":  "k-123",
		"password": "hunter2",
		"amount":   12.5,
		"to":       "bob@example.org",
		"auth":     map[string]any{"user": "alice", "scheme": "basic"},
		"opts":     map[string]any{"client-secret": "s", "depth": 2},
		"tags":     []any{"a", "b"},
		"note":     strings.Repeat("é", 200),
	}
	rules := Classes{"path": Public, "amount": Public, "opts.depth": Public, "note": Public, "password": Sensitive}
	got := Classify(h, rules, args)
	cases := []struct{ field, want string }{
		{"path", "/srv/a.txt"},                      // public by rule
		{"API_Key", Redacted},                       // secret by name
		{"password", h.Digest([]byte("hunter2"))},   // a rule wins over the name
		{"amount", "12.5"},                          // non-string public as JSON
		{"to", h.Digest([]byte("bob@example.org"))}, // unclassified: sensitive
		{"auth.user", h.Digest([]byte("alice"))},    // nested, unclassified
		{"opts.client-secret", Redacted},
		{"opts.depth", "2"},
		{"tags", h.Digest([]byte(`["a","b"]`))},
	}
	for _, c := range cases {
		if got[c.field] != c.want {
			t.Errorf("%s = %q, want %q", c.field, got[c.field], c.want)
		}
	}
	if n := got["note"]; len(n) > MaxPublicLen+len("…") || !strings.HasSuffix(n, "…") || !strings.HasPrefix(n, "éé") {
		t.Errorf("long public value not cut cleanly: %q", n)
	}
	for k, v := range got {
		if strings.Contains(v, "hunter2") || strings.Contains(v, "k-123") {
			t.Errorf("%s leaks a secret: %q", k, v)
		}
	}
	if Classify(h, nil, nil) != nil {
		t.Error("no args should give no summary")
	}
	if err := (Classes{"a": "publc"}).Validate(); !errors.Is(err, ErrInvalidClass) {
		t.Errorf("Validate(typo) = %v", err)
	}
	// An invalid class fails closed.
	if got := Classify(h, Classes{"x": "bogus"}, map[string]any{"x": "v"}); got["x"] != Redacted {
		t.Errorf("invalid class = %q, want redacted", got["x"])
	}
	for _, n := range []string{"token", "X-Auth-Token", "authorization", "db_password", "aws_secret_access_key", "Credential", "apiKey"} {
		if !IsSecretName(n) {
			t.Errorf("IsSecretName(%q) = false", n)
		}
	}
	if IsSecretName("author") || IsSecretName("path") {
		t.Error("IsSecretName is too eager")
	}
}

func TestExportRoundTrip(t *testing.T) {
	f := newFixture(t, 30)
	s, err := store.Open(f.db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var buf bytes.Buffer
	n, last, err := Export(context.Background(), s, &buf, ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyJSONL(bytes.NewReader(buf.Bytes()), f.opts(t))
	if err != nil || rep.Entries != uint64(n) || rep.Last != last || !rep.Anchored || rep.Unanchored {
		t.Fatalf("VerifyJSONL(full export) = %+v, %v (exported %d up to %d)", rep, err, n, last)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if !strings.Contains(lines[0], `"controls":["NIST-CSF-2.0:PR.AA","NIST-CSF-2.0:PR.AA-05","NIST-CSF-1.1:PR.AC-4"]`) {
		t.Errorf("call.decided not tagged with least privilege: %s", lines[0])
	}
	// Resume: two halves concatenated verify like the whole.
	var a, b bytes.Buffer
	_, mid, err := Export(context.Background(), s, &a, ExportOptions{To: 10})
	if err != nil || mid != 10 {
		t.Fatalf("first half: last %d, %v", mid, err)
	}
	if _, _, err := Export(context.Background(), s, &b, ExportOptions{From: mid + 1}); err != nil {
		t.Fatal(err)
	}
	if a.String()+b.String() != buf.String() {
		t.Fatal("resumed export differs from one export")
	}
	if rep, err := VerifyJSONL(&b, VerifyOptions{PublicKey: f.signer.PublicKey()}); err != nil || !rep.Unanchored || rep.First != 11 {
		t.Fatalf("second half = %+v, %v; want a verified, unanchored start at 11", rep, err)
	}
	// Since a time: the export starts at the first entry at or after it.
	var c bytes.Buffer
	if _, _, err := Export(context.Background(), s, &c, ExportOptions{Since: t0.Add(5*time.Millisecond + time.Microsecond)}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.String(), `{"seq":6,`) {
		t.Fatalf("since export starts with %.20s", c.String())
	}
	// Any edit of the export is caught.
	edits := map[string]func(l []string) []string{
		"edit":   func(l []string) []string { l[4] = strings.Replace(l[4], "call-05", "call-99", 1); return l },
		"delete": func(l []string) []string { return append(l[:4], l[5:]...) },
		"swap":   func(l []string) []string { l[4], l[5] = l[5], l[4]; return l },
		"cut":    func(l []string) []string { return l[:len(l)-3] },
		"dup":    func(l []string) []string { return append(l[:5], l[4:]...) },
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			l := edit(append([]string(nil), lines...))
			_, err := VerifyJSONL(strings.NewReader(strings.Join(l, "\n")), f.opts(t))
			if !errors.Is(err, ErrChainBroken) {
				t.Fatalf("VerifyJSONL = %v, want ErrChainBroken", err)
			}
		})
	}
}

func TestCompact(t *testing.T) {
	f := newFixture(t, 20)
	s, err := store.Open(f.db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var archive bytes.Buffer
	res, err := Compact(context.Background(), s, f.signer, t0.Add(10*time.Millisecond+time.Microsecond), &archive)
	if err != nil {
		t.Fatal(err)
	}
	if res.First != 1 || res.Last < 9 || res.Archived != res.Last {
		t.Fatalf("Compact = %+v", res)
	}
	opts := f.opts(t)
	rep, err := VerifyStore(s, opts)
	if err != nil || rep.Base == nil || rep.First != res.Last+1 || !rep.Anchored {
		t.Fatalf("VerifyStore after compaction = %+v, %v", rep, err)
	}
	if arep, err := VerifyJSONL(&archive, VerifyOptions{PublicKey: f.signer.PublicKey()}); err != nil || arep.First != 1 || arep.Last != res.Last {
		t.Fatalf("archive = %+v, %v", arep, err)
	}
	// The ledger keeps growing and verifying after compaction, and a
	// second compaction chains from the first base.
	l := NewLedger(s, nil, WithClock(fixedClock()), WithSigner(f.signer), WithAnchorFile(f.anchor))
	for range 3 {
		if _, err := l.Record(context.Background(), Event{Type: CallDecided, Decision: DecisionAllow}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Verify(); err != nil {
		t.Fatalf("Verify after more records: %v", err)
	}
	var archive2 bytes.Buffer
	res2, err := Compact(context.Background(), s, f.signer, time.Now().Add(time.Hour), &archive2)
	if err != nil || res2.First != res.Last+1 {
		t.Fatalf("second Compact = %+v, %v", res2, err)
	}
	if _, err := l.Verify(); err != nil {
		t.Fatalf("Verify after second compaction: %v", err)
	}
	if n, _ := s.LedgerLen(); n == 0 {
		t.Fatal("head removed")
	}
	// A forged base (other key) is refused.
	_, err = VerifyStore(s, VerifyOptions{PublicKey: make([]byte, 32)})
	if !errors.Is(err, ErrChainBroken) || !strings.Contains(err.Error(), "compaction base") {
		t.Fatalf("VerifyStore with the wrong key = %v", err)
	}
}

func TestCompactRefusesBrokenLedger(t *testing.T) {
	f := newFixture(t, 5)
	raw, _ := os.ReadFile(f.db)
	os.WriteFile(f.db, bytes.ReplaceAll(raw, []byte(`"call-03"`), []byte(`"call-0X"`)), 0o600)
	s, err := store.Open(f.db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Compact(context.Background(), s, f.signer, time.Now(), &bytes.Buffer{}); !errors.Is(err, ErrChainBroken) {
		t.Fatalf("Compact(broken) = %v", err)
	}
}

func TestCheckpointNeedsSigner(t *testing.T) {
	l, _ := newLedger(t)
	if _, err := l.Checkpoint(context.Background()); !errors.Is(err, ErrNoSigner) {
		t.Fatalf("Checkpoint without signer = %v", err)
	}
	if _, err := l.Record(context.Background(), Event{Type: LedgerCheckpoint, Checkpoint: &Checkpoint{}}); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("Record(checkpoint) = %v", err)
	}
}

func TestSignerKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), SigningKeyFile)
	a, err := LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadSigner(path)
	if err != nil || !a.PublicKey().Equal(b.PublicKey()) {
		t.Fatalf("reload: %v", err)
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", info.Mode())
	}
	if strings.Contains(fmt.Sprint(a), "ed25519") && !strings.Contains(fmt.Sprint(a), "redacted") {
		t.Fatalf("signer prints %v", a)
	}
	cp := a.Sign(3, "ab")
	if err := cp.Verify(a.PublicKey()); err != nil {
		t.Fatal(err)
	}
	cp.Hash = "ac"
	if err := cp.Verify(nil); err == nil {
		t.Fatal("altered checkpoint verifies")
	}
	os.Chmod(path, 0o644)
	if _, err := LoadSigner(path); err == nil {
		t.Fatal("group-readable key accepted")
	}
}

// TestRecordFailsReadOnly: a store that cannot be written makes Record
// fail, which the pipeline turns into a denied call (fail closed).
func TestRecordFailsReadOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "broker.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	ro, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	l := NewLedger(ro, nil)
	if _, err := l.Record(context.Background(), Event{Type: CallDecided, Decision: DecisionAllow}); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("Record on a read-only store = %v, want ErrReadOnly", err)
	}
	if os.Geteuid() == 0 {
		t.Log("running as root: file-mode read-only cases skipped")
		return
	}
	os.Chmod(path, 0o400)
	os.Chmod(dir, 0o500)
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	if _, err := store.Open(path, store.Options{}); err == nil {
		t.Fatal("opened a read-only file for writing")
	}
	if _, err := store.Open(filepath.Join(dir, "new.db"), store.Options{}); err == nil {
		t.Fatal("created a store in a read-only directory")
	}
}

func TestHandlerVerifyExport(t *testing.T) {
	f := newFixture(t, 8)
	s, err := store.Open(f.db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := NewLedger(s, nil, WithSigner(f.signer), WithAnchorFile(f.anchor))
	dir, err := os.MkdirTemp("", "sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	h := Handler(l)
	mux := http.NewServeMux()
	mux.Handle(AuditPath, h)
	mux.Handle(AuditPath+"/", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	ctx := context.Background()

	res, err := VerifyRemote(ctx, sock)
	if err != nil || !res.OK || !res.Report.Anchored || !res.Report.KeyPinned {
		t.Fatalf("VerifyRemote = %+v, %v", res, err)
	}
	var buf bytes.Buffer
	n, last, err := ExportRemote(ctx, sock, &buf, ExportOptions{From: 3})
	if err != nil || n == 0 || last != res.Report.Last {
		t.Fatalf("ExportRemote = %d %d %v", n, last, err)
	}
	if rep, err := VerifyJSONL(&buf, VerifyOptions{PublicKey: f.signer.PublicKey()}); err != nil || rep.First != 3 {
		t.Fatalf("remote export verifies: %+v %v", rep, err)
	}
	got, err := ListRemote(ctx, sock, Filter{FromSeq: 2, ToSeq: 2})
	if err != nil || len(got) != 1 || got[0].Seq != 2 {
		t.Fatalf("show via remote = %v, %v", got, err)
	}
	if code, _ := httpOverUnix(sock, ExportPath+"?from=x"); code != http.StatusBadRequest {
		t.Fatalf("bad from: %d", code)
	}
	// A broker that mounts only AuditPath answers 404: the CLI says so.
	srv2mux := http.NewServeMux()
	srv2mux.Handle(AuditPath, h)
	sock2 := filepath.Join(dir, "old.sock")
	ln2, _ := net.Listen("unix", sock2)
	srv2 := &http.Server{Handler: srv2mux, ReadHeaderTimeout: time.Second}
	go srv2.Serve(ln2)
	defer srv2.Close()
	if _, err := VerifyRemote(ctx, sock2); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("VerifyRemote on an old broker = %v", err)
	}
}

func TestPeriodicCheckpoints(t *testing.T) {
	s := openStore(t, store.Options{})
	signer, _ := LoadOrCreateSigner(filepath.Join(t.TempDir(), SigningKeyFile))
	anchor := filepath.Join(t.TempDir(), AnchorFile)
	l := NewLedger(s, nil, WithSigner(signer), WithCheckpointEvery(10), WithAnchorFile(anchor))
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for range 25 {
				if _, err := l.Record(context.Background(), Event{Type: CallDecided, Decision: DecisionAllow}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	a, err := ReadAnchor(anchor)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyStore(s, VerifyOptions{PublicKey: signer.PublicKey(), Anchor: a})
	if err != nil {
		t.Fatal(err)
	}
	// 200 records, one checkpoint per 10 after the first: about 19.
	if rep.Checkpoints < 15 || rep.Checkpoints > 21 || !rep.Anchored {
		t.Fatalf("report = %+v", rep)
	}
}

func TestReadyAfterFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	s, _ := store.Open(path, store.Options{})
	s.Close()
	ro, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	var commits, failures int
	l := NewLedger(ro, nil, WithCommitObserver(func(seq uint64, _ time.Duration, err error) {
		if err != nil {
			failures++
		} else {
			commits++
		}
	}))
	if err := l.Ready(context.Background()); err != nil {
		t.Fatalf("fresh ledger not ready: %v", err)
	}
	l.Record(context.Background(), Event{Type: BrokerStarted})
	if err := l.Ready(context.Background()); err == nil {
		t.Fatal("ledger that failed to write reports ready")
	}
	if failures != 1 || commits != 0 {
		t.Fatalf("observer saw %d failures, %d commits", failures, commits)
	}
}
