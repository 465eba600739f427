package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The crash test re-executes the test binary as a child that appends to the
// store until the parent kills it with SIGKILL. The child reports every
// append on stdout, one line per write(2):
//
//	start <task> <payload>        before the append is called
//	ack <seq> <task> <payload>    after it returned nil
//	error <payload> <message>     after it returned an error (a test failure)
//
// task is the task the append charges ("t1", "t2") or "-" for a plain
// AppendLedger; payload ("r<round>.g<goroutine>.n<n>.<task>") is unique and
// is the entry's payload in chainBuild's "seq:prevhex:payload" format.
const (
	crashChildEnv = "STORE_CRASH_CHILD" // the store path; set only in the child
	crashRoundEnv = "STORE_CRASH_ROUND"
	crashRounds   = 5
	crashWriters  = 16
)

var crashTasks = []string{"-", "t1", "t2"}

// TestCrashDurability kills a process appending to the store at a random
// moment, five times on the same file, and checks after each kill that the
// reopened store kept every acknowledged append: sequence numbers 1..head
// without gaps, every entry chained to the previous one, the head hash that
// of the last entry, no entry that was never started, and every task's call
// counter equal to the number of entries that charged it (the spend and its
// entry commit together), which lies between the acknowledged and the
// started charges.
func TestCrashDurability(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path, os.Getenv(crashRoundEnv))
		return
	}
	start := time.Now()
	path := filepath.Join(t.TempDir(), "data", "broker.db")
	st := crashState{counts: map[string]int64{}}
	for round := 1; round <= crashRounds; round++ {
		log, stderr := runCrashChild(t, path, round)
		st.verify(t, path, round, log, stderr)
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d rounds, %d entries, call counts %v, in %v", crashRounds, len(st.payloads), st.counts, time.Since(start).Round(time.Millisecond))
}

// crashChild is the child's side: it appends from crashWriters goroutines
// until it is killed. It never returns; it exits by itself after a minute
// in case the parent is gone (a write to the closed pipe kills it sooner).
func crashChild(path, round string) {
	var mu sync.Mutex
	emit := func(line string) {
		mu.Lock()
		defer mu.Unlock()
		// os.Stdout is unbuffered: the line is in the pipe when this returns.
		if _, err := os.Stdout.WriteString(line); err != nil {
			os.Exit(2)
		}
	}
	s, err := Open(path, Options{})
	if err != nil {
		emit(fmt.Sprintf("error open %s\n", oneLine(err)))
		os.Exit(2)
	}
	ctx := context.Background()
	for g := range crashWriters {
		go func() {
			for n := 0; ; n++ {
				task := crashTasks[(g+n)%len(crashTasks)]
				payload := fmt.Sprintf("r%s.g%d.n%d.%s", round, g, n, task)
				emit("start " + task + " " + payload + "\n")
				var seq uint64
				var err error
				if task == "-" {
					seq, err = s.AppendLedger(ctx, chainBuild(payload))
				} else {
					seq, err = s.AppendLedgerSpending(ctx, chainBuild(payload), Spend{IDs: []string{task}, Limits: []int64{0}})
				}
				if err != nil {
					emit(fmt.Sprintf("error %s %s\n", payload, oneLine(err)))
					return
				}
				emit(fmt.Sprintf("ack %d %s %s\n", seq, task, payload))
			}
		}()
	}
	time.Sleep(time.Minute)
	os.Exit(3)
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " | ") }

// crashLog is what the parent read from one child.
type crashLog struct {
	started map[string]string // payload -> task
	acked   map[string]uint64 // payload -> seq
	ackedBy map[string]int64  // task -> acknowledged appends
	startBy map[string]int64  // task -> started appends
	errs    []string          // error lines and malformed lines
}

// readCrashLog reads the child's stdout to EOF. It closes firstAck at the
// first ack line. A last line without its newline (cut by the kill) is
// ignored.
func readCrashLog(r io.Reader, firstAck chan<- struct{}) *crashLog {
	l := &crashLog{
		started: map[string]string{},
		acked:   map[string]uint64{},
		ackedBy: map[string]int64{},
		startBy: map[string]int64{},
	}
	br := bufio.NewReader(r)
	acked := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return l // EOF or a read error: a partial line is dropped
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "start":
			l.started[f[2]] = f[1]
			l.startBy[f[1]]++
		case len(f) == 4 && f[0] == "ack":
			seq, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				l.errs = append(l.errs, "malformed: "+line)
				continue
			}
			if _, dup := l.acked[f[3]]; dup {
				l.errs = append(l.errs, "acknowledged twice: "+line)
			}
			l.acked[f[3]] = seq
			l.ackedBy[f[2]]++
			if !acked {
				acked = true
				close(firstAck)
			}
		case len(f) > 0 && f[0] == "error":
			l.errs = append(l.errs, strings.TrimSpace(line))
		default:
			// The testing package's own output, if any.
		}
	}
}

// runCrashChild starts a child appending to path, kills it with SIGKILL
// 50-400ms after its first acknowledged append and returns what it
// reported.
func runCrashChild(t *testing.T, path string, round int) (*crashLog, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashDurability$", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path, crashRoundEnv+"="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	firstAck := make(chan struct{})
	logc := make(chan *crashLog, 1)
	go func() { logc <- readCrashLog(stdout, firstAck) }()

	var log *crashLog
	select {
	case <-firstAck:
		time.Sleep(50*time.Millisecond + rand.N(350*time.Millisecond))
		if err := cmd.Process.Kill(); err != nil {
			t.Errorf("round %d: kill: %v", round, err)
		}
		log = <-logc
	case log = <-logc: // EOF before any ack: the child died by itself
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		log = <-logc
		t.Errorf("round %d: no acknowledged append within 15s", round)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != -1 { // -1: ended by a signal
		t.Errorf("round %d: child was not killed: %v", round, err)
	}
	if strings.Contains(stderr.String(), "DATA RACE") || strings.Contains(stderr.String(), "panic:") {
		t.Errorf("round %d: child reported a race or panic", round)
	}
	for _, e := range log.errs {
		t.Errorf("round %d: child: %s", round, e)
	}
	if t.Failed() {
		t.Fatalf("round %d: child stderr:\n%s", round, stderr.String())
	}
	return log, stderr.String()
}

// crashState is what the ledger held after the last verified round.
type crashState struct {
	payloads []string         // payloads[seq-1]
	counts   map[string]int64 // task -> CallCount
}

// verify reopens the store after round's kill and checks it against the
// child's log and the previous rounds, then records the new state.
func (st *crashState) verify(t *testing.T, path string, round int, l *crashLog, stderr string) {
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("round %d: reopen after kill: %v", round, err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("round %d: close: %v", round, err)
		}
	}()
	if err := s.Check(); err != nil {
		t.Errorf("round %d: Check: %v", round, err)
	}

	base := uint64(len(st.payloads))
	var (
		want     uint64 = 1
		prevHash []byte
		payloads []string
		landed   = map[string]int64{} // task -> entries of this round
	)
	seen := map[string]uint64{}
	err = s.ScanLedger(1, func(seq uint64, entry []byte) error {
		if seq != want {
			return fmt.Errorf("seq %d after %d: a gap", seq, want-1)
		}
		want++
		parts := strings.SplitN(string(entry), ":", 3)
		if len(parts) != 3 || parts[0] != strconv.FormatUint(seq, 10) {
			return fmt.Errorf("seq %d: malformed entry %q", seq, entry)
		}
		if parts[1] != fmt.Sprintf("%x", prevHash) {
			return fmt.Errorf("seq %d: entry %q does not chain to %x", seq, entry, prevHash)
		}
		h := sha256.Sum256(entry)
		prevHash = h[:]
		p := parts[2]
		if at, dup := seen[p]; dup {
			return fmt.Errorf("seq %d: payload %q already at seq %d", seq, p, at)
		}
		seen[p] = seq
		payloads = append(payloads, p)
		if seq <= base {
			if p != st.payloads[seq-1] {
				return fmt.Errorf("seq %d: payload %q, was %q before round %d", seq, p, st.payloads[seq-1], round)
			}
			return nil
		}
		task, ok := l.started[p]
		if !ok {
			return fmt.Errorf("seq %d: payload %q was never started in round %d", seq, p, round)
		}
		landed[task]++
		return nil
	})
	if err != nil {
		t.Fatalf("round %d: scan: %v", round, err)
	}
	head := want - 1

	n, hash, err := s.LedgerHead()
	if err != nil {
		t.Fatalf("round %d: LedgerHead: %v", round, err)
	}
	if n != head || !bytes.Equal(hash, prevHash) {
		t.Errorf("round %d: LedgerHead = %d %x; the last entry is %d with hash %x", round, n, hash, head, prevHash)
	}
	if head < base {
		t.Errorf("round %d: head %d below the previous round's %d", round, head, base)
	}

	lost := 0
	for p, seq := range l.acked {
		if seq <= base || seq > head || payloads[seq-1] != p {
			lost++
			if lost <= 10 {
				got := "nothing"
				if seq >= 1 && seq <= head {
					got = strconv.Quote(payloads[seq-1])
				}
				t.Errorf("round %d: acknowledged append %q at seq %d lost: the ledger holds %s there (head %d, previous head %d)", round, p, seq, got, head, base)
			}
		}
	}
	if lost > 0 {
		t.Errorf("round %d: %d of %d acknowledged appends lost", round, lost, len(l.acked))
	}
	if add := head - base; add < uint64(len(l.acked)) || add > uint64(len(l.started)) {
		t.Errorf("round %d: %d entries added; acknowledged %d, started %d", round, add, len(l.acked), len(l.started))
	}

	counts := map[string]int64{}
	for _, task := range crashTasks[1:] {
		c, err := s.CallCount(task)
		if err != nil {
			t.Fatalf("round %d: CallCount(%s): %v", round, task, err)
		}
		counts[task] = c
		b, acked := st.counts[task], l.ackedBy[task]
		inflight := l.startBy[task] - acked
		if c != b+landed[task] {
			t.Errorf("round %d: CallCount(%s) = %d, but %d+%d entries charged it: spend and entry did not commit together", round, task, c, b, landed[task])
		}
		if c < b+acked || c > b+acked+inflight {
			t.Errorf("round %d: CallCount(%s) = %d, want %d..%d (previous %d, acknowledged %d, in flight %d)", round, task, c, b+acked, b+acked+inflight, b, acked, inflight)
		}
	}
	t.Logf("round %d: head %d (+%d): acknowledged %d, started %d; call counts %v", round, head, head-base, len(l.acked), len(l.started), counts)
	if t.Failed() {
		t.Logf("round %d: child stderr:\n%s", round, stderr)
	}
	st.payloads, st.counts = payloads, counts
}
