package broker

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestWorkersReuse: functions run one after another share a worker
// (whose stack has grown), and concurrent ones do not wait for each other.
func TestWorkersReuse(t *testing.T) {
	w := newWorkers(time.Hour) // no worker exits while the test is held off the CPU
	defer func() { w.close(); w.wait() }()

	// One after another: the worker that ran the first takes the next
	// (a blocking send: only an idle worker can take it).
	ids := make(chan uint64, 3)
	w.Go(func() { ids <- goid() })
	for range 2 {
		w.jobs <- func() { ids <- goid() }
	}
	first := <-ids
	for range 2 {
		if id := <-ids; id != first {
			t.Fatalf("sequential functions ran on goroutines %d and %d", first, id)
		}
	}

	// Concurrent: each its own worker.
	var wg sync.WaitGroup
	release := make(chan struct{})
	running := make(chan struct{}, 4)
	for range 4 {
		wg.Add(1)
		w.Go(func() { defer wg.Done(); running <- struct{}{}; <-release })
	}
	for range 4 {
		select {
		case <-running:
		case <-time.After(5 * time.Second):
			t.Fatal("concurrent functions did not all start")
		}
	}
	close(release)
	wg.Wait()
}

// TestWorkersIdleExit: workers that wait idleness out exit on their own.
func TestWorkersIdleExit(t *testing.T) {
	w := newWorkers(50 * time.Millisecond)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		w.Go(wg.Done)
	}
	wg.Wait()
	exited := make(chan struct{})
	go func() { w.wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("idle workers did not exit")
	}
}

// TestWorkersClose: close ends idle workers at once and a busy one when
// its function returns; a function given after close still runs.
func TestWorkersClose(t *testing.T) {
	w := newWorkers(time.Hour)
	done := make(chan struct{})
	w.Go(func() { close(done) })
	<-done
	release, busy := make(chan struct{}), make(chan struct{})
	w.Go(func() { close(busy); <-release })
	<-busy
	w.close()
	ran := make(chan struct{})
	w.Go(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("a function given after close did not run")
	}
	close(release)
	exited := make(chan struct{})
	go func() { w.wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("workers did not exit after close")
	}
}

// goid is the calling goroutine's id, from its stack header.
func goid() uint64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	var id uint64
	for _, c := range buf[len("goroutine "):n] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}
