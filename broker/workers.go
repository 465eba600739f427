package broker

import (
	"sync"
	"time"
)

// workers runs functions on goroutines that outlive them, so that a
// function whose stack grows deep does not grow a new goroutine's stack
// from the minimum every time. A 2026-07-28 call's downstream leg runs on
// its own goroutine (it may outlive the agent's request, see
// forwardParked), through mcp-go's client and encoding/json: on a fresh
// goroutine per call, growing its stack (runtime.copystack) was 5 % of
// the broker's CPU under load.
//
// Go never waits: an idle worker takes the function, or a new one starts.
// A worker idle for workerIdle exits, so the pool follows the load down;
// after close, workers exit as soon as they are idle. A function that
// panics takes the process down, as it would on its own goroutine.
type workers struct {
	jobs chan func() // unbuffered: a send succeeds only to an idle worker
	stop chan struct{}
	once sync.Once
	idle time.Duration
	wg   sync.WaitGroup
}

// workerIdle is how long an idle worker waits for work before it exits.
const workerIdle = 10 * time.Second

func newWorkers(idle time.Duration) *workers {
	return &workers{jobs: make(chan func()), stop: make(chan struct{}), idle: idle}
}

// Go runs f on an idle worker, or on a new one.
func (w *workers) Go(f func()) {
	select {
	case w.jobs <- f:
	default:
		w.wg.Add(1)
		go w.loop(f)
	}
}

func (w *workers) loop(f func()) {
	defer w.wg.Done()
	t := time.NewTimer(w.idle)
	defer t.Stop()
	for {
		f()
		f = nil // nothing of the last call stays reachable while idle
		select {
		case <-w.stop:
			return
		default:
		}
		t.Reset(w.idle)
		select {
		case f = <-w.jobs:
		case <-t.C:
			return
		case <-w.stop:
			return
		}
	}
}

// close stops the idle workers and makes busy ones exit when their
// function returns; it does not wait for them (wait does). Go after close
// still runs f, on a goroutine of its own.
func (w *workers) close() {
	w.once.Do(func() { close(w.stop) })
}

// wait returns when every worker has exited. Call it only after close and
// after the last Go (a Go racing with wait breaks sync.WaitGroup's rule).
func (w *workers) wait() { w.wg.Wait() }
