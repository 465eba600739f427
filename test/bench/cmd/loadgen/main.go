// Command loadgen measures what brokering costs: it starts a downstream MCP
// server, a transparent mcp-go proxy and mcpbroker (all in this process, on
// loopback) and drives N concurrent official go-sdk clients against each,
// interleaved in short rounds, printing a Markdown table per run.
//
//	go run ./test/bench/cmd/loadgen                       # echo, 1/16/64 clients, both eras
//	go run ./test/bench/cmd/loadgen -policies 50,500,5000 -clients 16 -eras 2025-11-25
//	go run ./test/bench/cmd/loadgen -workload echo -payload 102400 -clients 16
//	go run ./test/bench/cmd/loadgen -workload list -tools 1000 -clients 1
//	go run ./test/bench/cmd/loadgen -workload sleep -sleep-ms 20 -clients 64
//	go run ./test/bench/cmd/loadgen -idle 10000            # memory per idle session
//
// Flags: -clients, -eras, -rounds, -round (duration of one target's turn),
// -workload echo|sleep|list, -sleep-ms, -payload (bytes), -policies (broker
// sizes; the first is "broker"), -tools (downstream filler tools), -nosync
// (add broker-nosync), -idle N (open N idle sessions per target and report
// heap per session instead of load), -broker-only (no direct or proxy
// target, for profiles), -cpuprofile FILE.
//
// Besides each target's own process (CPU, allocations, RSS), every row
// reports the whole machine during that target's rounds (/proc/stat): busy
// CPU time per call (clients, target, downstream and kernel together), the
// share of CPU time idle, and context switches per call. On a machine
// whose cores the clients share, these say where a slower target's time
// went: more work per call, or waiting.
//
// -broker-variants starts more brokers with extra environment; the
// variable BENCH_NOSYNC=1 makes a variant a no-fsync broker, so that
// `-broker-only -broker-variants 'A=1;BENCH_NOSYNC=1'` compares a durable
// broker with an identical one (the run's own noise) and a no-fsync one.
//
// Everything shares one process and the machine's cores, so absolute
// numbers are pessimistic; the ratios from one run are what count.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mcpbroker/mcpbroker/test/bench"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == bench.RoleFlag {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := bench.ServeRole(ctx, os.Args[2], os.Args[3:], os.Stdout); err != nil {
			log.Fatalf("%s: %v", os.Args[2], err)
		}
		return
	}
	clients := flag.String("clients", "1,16,64", "concurrent client sessions per target, comma-separated")
	eras := flag.String("eras", bench.Legacy+","+bench.Modern, "protocol eras, comma-separated")
	rounds := flag.Int("rounds", 5, "rounds; each visits every target once")
	roundDur := flag.Duration("round", 2*time.Second, "one target's turn in a round")
	workload := flag.String("workload", "echo", "echo | sleep | list")
	sleepMS := flag.Int("sleep-ms", 10, "sleep tool argument (workload sleep)")
	payload := flag.Int("payload", 0, "extra echo argument size in bytes")
	pols := flag.String("policies", "50", "broker policy-set sizes, comma-separated")
	tools := flag.Int("tools", 0, "filler tools on the downstream")
	nosync := flag.Bool("nosync", true, "add broker-nosync (records written, not fsynced)")
	idle := flag.Int("idle", 0, "open this many idle sessions per target and report memory per session")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (with -procs: of each broker process, to FILE.<target>)")
	only := flag.Bool("broker-only", false, "drive the broker alone (for profiles: no direct or proxy target)")
	memprofile := flag.String("memprofile", "", "write a heap profile (after a GC) at the end (with -procs: of each broker process, to FILE.<target>)")
	soak := flag.Duration("soak", 0, "drive the broker alone for this long at the first -clients count and report heap, goroutines and RSS every -round")
	brokerEnv := flag.String("broker-env", "", "with -procs: environment for each broker process, comma-separated (GOMAXPROCS=3,GOGC=200)")
	variants := flag.String("broker-variants", "", "with -procs: more broker targets in the same run, one per environment, ';'-separated (GOMAXPROCS=3;GOGC=200,GOMAXPROCS=3)")
	procs := flag.Bool("procs", true, "run the downstream, the proxy and each broker in its own process (as deployed); false runs them in this process")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *cpuprofile != "" && !*procs {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	host, _ := os.Hostname()
	fmt.Printf("# mcpbroker benchmark %s\n\nhost %s, %s/%s, GOMAXPROCS %d, %s, %s\n", time.Now().UTC().Format(time.RFC3339),
		host, runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), cpuModel(), runtime.Version())
	fmt.Printf("command: loadgen %s\n", strings.Join(os.Args[1:], " "))

	if *idle > 0 {
		if err := idleRun(ctx, *idle, ints(*pols)); err != nil {
			log.Fatal(err)
		}
		return
	}
	w := bench.Workload{Kind: *workload, SleepMS: *sleepMS, Payload: *payload}
	if *memprofile != "" && !*procs && *soak == 0 {
		defer func() {
			if err := writeHeapProfile(*memprofile); err != nil {
				log.Fatal(err)
			}
		}()
	}
	if *soak > 0 {
		if err := soakRun(ctx, *soak, *roundDur, ints(*clients)[0], strings.Split(*eras, ",")[0], w, ints(*pols), *procs, *memprofile); err != nil {
			log.Fatal(err)
		}
		return
	}
	for _, era := range strings.Split(*eras, ",") {
		rig, err := bench.NewRig(ctx, bench.RigOptions{Era: era, Tools: *tools, Policies: ints(*pols), NoSync: *nosync && !*only,
			NoDirect: *only, NoProxy: *only, Exe: exe(*procs), CPUProfile: *cpuprofile, MemProfile: *memprofile, BrokerEnv: envList(*brokerEnv), Variants: variantList(*variants)})
		if err != nil {
			log.Fatal(err)
		}
		for _, n := range ints(*clients) {
			stats, err := bench.Run(ctx, rig.Targets, era, n, w, *rounds, *roundDur)
			if err != nil {
				_ = rig.Close()
				log.Fatal(err)
			}
			bench.WriteTable(os.Stdout, fmt.Sprintf("## %s, %s, %d clients, %d policies, %d×%s rounds", era, w, n, ints(*pols)[0], *rounds, *roundDur), stats)
		}
		if err := rig.Close(); err != nil {
			log.Printf("close: %v", err)
		}
	}
}

// idleRun opens n idle 2025-11-25 sessions on each target in turn, each
// target in a fresh rig, and reports the live-heap growth per session.
func idleRun(ctx context.Context, n int, pols []int) error {
	fmt.Printf("\n## %d idle sessions per target (2025-11-25, initialize + initialized, bare HTTP client)\n\n", n)
	fmt.Println("| target | sessions | heap Δ MiB | KiB/session | goroutines Δ | RSS MiB |")
	fmt.Println("|---|---|---|---|---|---|")
	rig, err := bench.NewRig(ctx, bench.RigOptions{Era: bench.Legacy, Policies: pols[:1]})
	if err != nil {
		return err
	}
	defer rig.Close()
	for _, t := range rig.Targets {
		h0, g0 := bench.HeapInUse(), runtime.NumGoroutine()
		ids, err := bench.OpenIdleSessions(ctx, t.URL, t.Token, n)
		if err != nil {
			return fmt.Errorf("%s: %w", t.Name, err)
		}
		time.Sleep(500 * time.Millisecond) // let records and session state settle
		h1, g1 := bench.HeapInUse(), runtime.NumGoroutine()
		d := float64(int64(h1) - int64(h0))
		fmt.Printf("| %s | %d | %.1f | %.2f | %d | %.0f |\n", t.Name, len(ids), d/(1<<20), d/1024/float64(len(ids)), g1-g0, float64(bench.RSS())/(1<<20))
	}
	return nil
}

// exe is this executable when targets run in their own processes.
func exe(procs bool) string {
	if !procs {
		return ""
	}
	p, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	return p
}

func envList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func variantList(s string) [][]string {
	var out [][]string
	for _, v := range strings.Split(s, ";") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, envList(v))
		}
	}
	return out
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			log.Fatalf("bad number %q", f)
		}
		out = append(out, n)
	}
	return out
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "cpu unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "cpu unknown"
}

// writeHeapProfile writes this process's heap profile, after a GC, to path.
func writeHeapProfile(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.WriteHeapProfile(f)
}

// soakRun drives the broker at constant load for d, with the same client
// sessions throughout, and reports, after each interval, calls/s and the
// broker's live heap (after two collections), goroutines and RSS: a leak
// shows as a trend, not as one number. With procs the broker runs in its
// own process and these are that process's alone; otherwise they include
// the clients.
//
// With memprofile, the broker writes a heap profile after each interval to
// memprofile.<interval number>: `go tool pprof -base FILE.1 FILE.10` shows
// what grew.
func soakRun(ctx context.Context, d, interval time.Duration, clients int, era string, w bench.Workload, pols []int, procs bool, memprofile string) error {
	rig, err := bench.NewRig(ctx, bench.RigOptions{Era: era, Policies: pols[:1], NoDirect: true, NoProxy: true, Exe: exe(procs)})
	if err != nil {
		return err
	}
	defer rig.Close()
	target := rig.Targets[0]
	ss, err := bench.OpenSessions(ctx, rig.Targets, era, clients, w)
	if err != nil {
		return err
	}
	defer ss.Close()
	where := "in the load generator's process (clients included)"
	if procs {
		where = "the broker's own process"
	}
	fmt.Printf("\n## soak: broker, %s, %s, %d clients, %s in %s intervals; memory: %s\n\n", era, w, clients, d, interval, where)
	fmt.Println("| minute | calls/s | p99 | heap MiB (after GC) | goroutines | RSS MiB |")
	fmt.Println("|---|---|---|---|---|---|")
	start := time.Now()
	n := 0
	for time.Since(start) < d && ctx.Err() == nil {
		stats, err := ss.Run(ctx, w, 1, interval)
		if err != nil {
			return err
		}
		st := stats[0]
		if st.Errors > 0 {
			return fmt.Errorf("%d calls failed: %v", st.Errors, st.FirstErr)
		}
		prof := ""
		if memprofile != "" {
			n++
			prof = fmt.Sprintf("%s.%d", memprofile, n)
		}
		mem, err := target.MemoryStats(prof)
		if err != nil {
			return err
		}
		fmt.Printf("| %.1f | %.0f | %.1f ms | %.1f | %d | %.0f |\n", time.Since(start).Minutes(), st.CallsPerSec(), float64(st.Pct(0.99))/1e6,
			float64(mem.HeapInuse)/(1<<20), mem.Goroutines, float64(mem.RSS)/(1<<20))
	}
	return nil
}
