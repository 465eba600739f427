package store

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
)

// TestProbeSeesTheLog: when the log cannot grow (a file-size limit that the
// small bbolt file fits under, as a nearly full disk or a quota would be),
// appends fail, and Probe must not report the store writable.
func TestProbeSeesTheLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.db")
	s := mustOpen(t, path, Options{})
	defer s.Close()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = 512 << 10 // the bbolt file (32 KiB) fits, the log's first 1 MiB does not
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	if _, err := s.AppendLedger(context.Background(), chainBuild("x")); err == nil {
		t.Fatal("append succeeded past the file-size limit")
	}
	if err := s.Probe(context.Background()); err == nil {
		t.Fatal("Probe reports the store writable while the log cannot take appends")
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if err := s.Probe(context.Background()); err != nil {
		t.Fatalf("Probe once the log can grow again: %v", err)
	}
	mustAppend(t, s, "after")
}
