package broker

import (
	"os"
	"runtime"
	"runtime/debug"
)

// GCPercent is the garbage collector target the broker runs with unless
// the operator sets GOGC. A brokered call allocates about 30 KB that dies
// with the call while the live heap stays small (tens of MiB), so the Go
// default (100) collects very often: at 200 the broker measured about 10%
// less CPU per call and 9% more calls per second (loadgen -broker-variants
// GOGC=200, README). GOMEMLIMIT still bounds the heap when set.
const GCPercent = 200

// MinProcs is the fewest Ps (GOMAXPROCS) the broker runs with unless the
// operator sets GOMAXPROCS. Every call waits for two fdatasyncs of the
// ledger's write-ahead log and spends time in short blocking syscalls; on a
// 2-CPU machine, 4 Ps let other calls' goroutines run meanwhile: +10%
// calls/s at 16 clients in two runs, unchanged at 1 and 64 clients; 8 Ps
// were worse (loadgen -broker-variants 'GOMAXPROCS=4;GOMAXPROCS=8', README).
// Machines with 4 or more CPUs keep Go's default.
const MinProcs = 4

// TuneRuntime applies GCPercent unless GOGC is set, and MinProcs unless
// GOMAXPROCS is set. The serve command calls it once at start.
func TuneRuntime() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < MinProcs {
		runtime.GOMAXPROCS(MinProcs)
	}
}
