package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/mcpbroker/mcpbroker/broker"
	"github.com/mcpbroker/mcpbroker/broker/store"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Out-of-process targets. In a deployment the broker is its own process
// with its own garbage collector and scheduler; run in the load generator's
// process it shares both with the clients (whose go-sdk decoder allocates
// more per call than the whole broker hop) and with the downstream. With
// RigOptions.Exe set, the downstream, the proxy and every broker run as
// child processes of that executable (the load generator itself, re-run
// with RoleFlag), the clients stay in the parent, and each target reports
// its own allocations and RSS.

// RoleFlag as os.Args[1] makes the load generator serve one target:
// RoleFlag ROLE [flags], where ROLE is downstream, proxy or broker.
const RoleFlag = "-serve-role"

// ProcStats is what a target process reports about itself.
type ProcStats struct {
	Mallocs uint64        `json:"mallocs"`
	Bytes   uint64        `json:"bytes"`
	RSS     uint64        `json:"rss"`
	CPU     time.Duration `json:"cpu"` // user + system time of the process
	// Txs and Writes are a broker's store commits and the writes they
	// carried (group commit batch size = Writes/Txs).
	Txs    uint64        `json:"txs,omitempty"`
	Writes uint64        `json:"writes,omitempty"`
	Busy   time.Duration `json:"busy,omitempty"` // time the store spent committing
	// HeapInuse and Goroutines: the live heap (after two collections when
	// asked for with MemoryStats) and the goroutine count.
	HeapInuse  uint64 `json:"heap_inuse,omitempty"`
	Goroutines int    `json:"goroutines,omitempty"`
}

// cpuTime is this process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ServeRole runs one target in this process until ctx ends. It prints
// "url=", "handle=" (brokers) and "stats=" lines, then "ready", on out.
func ServeRole(ctx context.Context, role string, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	tools := fs.Int("tools", 0, "downstream filler tools")
	ds := fs.String("downstream", "", "downstream URL (proxy, broker)")
	era := fs.String("era", "", "downstream protocol era (proxy, broker)")
	pols := fs.Int("policies", 50, "broker policy-set size")
	nosync := fs.Bool("nosync", false, "broker records without fsync")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of this process")
	memprofile := fs.String("memprofile", "", "write a heap profile (allocations included) of this process when it stops")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Getenv("BENCH_NOSYNC") == "1" {
		*nosync = true // -broker-variants BENCH_NOSYNC=1: a no-fsync broker next to others
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *memprofile != "" {
		defer func() {
			runtime.GC()
			if f, err := os.Create(*memprofile); err == nil {
				_ = pprof.WriteHeapProfile(f)
				_ = f.Close()
			}
		}()
	}
	var url, handle string
	var closer func() error
	var commits func() store.CommitStats
	switch role {
	case "downstream":
		d, err := StartDownstream(*tools)
		if err != nil {
			return err
		}
		url, closer = d.URL, d.Close
	case "proxy":
		p, err := StartProxy(ctx, *ds, *era)
		if err != nil {
			return err
		}
		url, closer = p.URL, p.Close
	case "broker":
		broker.TuneRuntime() // as the serve command does
		b, err := StartBroker(ctx, *ds, BrokerOptions{Era: *era, Policies: *pols, NoSync: *nosync})
		if err != nil {
			return err
		}
		url, handle, closer, commits = b.URL, b.Handle, b.Close, b.CommitStats
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	defer closer()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("gc") == "1" {
			runtime.GC()
			runtime.GC()
		}
		if f := q.Get("heapprofile"); f != "" {
			if err := writeHeapProfile(f); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		w.Header().Set("Content-Type", "application/json")
		st := ProcStats{Mallocs: m.Mallocs, Bytes: m.TotalAlloc, RSS: RSS(), CPU: cpuTime(), HeapInuse: m.HeapInuse, Goroutines: runtime.NumGoroutine()}
		if commits != nil {
			cs := commits()
			st.Txs, st.Writes, st.Busy = cs.Txs, cs.Writes, cs.Busy
		}
		_ = json.NewEncoder(w).Encode(st)
	})}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	fmt.Fprintf(out, "url=%s\n", url)
	if handle != "" {
		fmt.Fprintf(out, "handle=%s\n", handle)
	}
	fmt.Fprintf(out, "stats=http://%s/\nready\n", ln.Addr())
	<-ctx.Done()
	return nil
}

// proc is a target running as a child process.
type proc struct {
	cmd   *exec.Cmd
	URL   string
	Handl string
	stats string
	done  chan error
}

// startProc runs exe RoleFlag role args... and waits for it to be ready.
func startProc(ctx context.Context, exe string, env []string, role string, args ...string) (*proc, error) {
	cmd := exec.Command(exe, append([]string{RoleFlag, role}, args...)...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		p.done <- cmd.Wait()
	}()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				return nil, fmt.Errorf("%s: exited before ready: %v", role, <-p.done)
			}
			k, v, _ := strings.Cut(line, "=")
			switch k {
			case "url":
				p.URL = v
			case "handle":
				p.Handl = v
			case "stats":
				p.stats = v
			case "ready":
				go func() {
					for range lines {
					}
				}()
				return p, nil
			}
		case <-timeout:
			_ = p.Close()
			return nil, fmt.Errorf("%s: not ready after 60s", role)
		case <-ctx.Done():
			_ = p.Close()
			return nil, ctx.Err()
		}
	}
}

// Stats asks the process for its counters.
func (p *proc) Stats() (ProcStats, error) { return p.get(p.stats) }

func (p *proc) get(u string) (ProcStats, error) {
	var st ProcStats
	resp, err := http.Get(u)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return st, fmt.Errorf("stats: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// writeHeapProfile writes this process's heap profile (allocations
// included) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Close stops the process (SIGTERM, then SIGKILL after 30 s).
func (p *proc) Close() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
			return nil
		}
		return err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("pid %s did not stop", strconv.Itoa(p.cmd.Process.Pid))
	}
}
