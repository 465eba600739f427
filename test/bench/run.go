package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Target is one endpoint under load.
type Target struct {
	Name   string
	URL    string
	Token  string // bearer credential, if any
	Handle string // broker task handle, if any
	Prefix string // tool name prefix ("bench__" for the broker)
	proc   *proc  // the target's own process, if it has one
}

// counters are the allocation counters and RSS that describe t: its own
// process's if it has one (the downstream's for direct), else this
// process's.
func (t Target) counters() (ProcStats, error) {
	if t.proc != nil {
		return t.proc.Stats()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return ProcStats{Mallocs: m.Mallocs, Bytes: m.TotalAlloc, RSS: RSS(), CPU: cpuTime()}, nil
}

// MemoryStats are t's live heap after two collections, goroutines and
// RSS: its own process's if it has one, else this process's (clients
// included). With heapProfile, the process also writes its heap profile
// there.
func (t Target) MemoryStats(heapProfile string) (ProcStats, error) {
	if t.proc != nil {
		v := url.Values{"gc": {"1"}}
		if heapProfile != "" {
			v.Set("heapprofile", heapProfile)
		}
		return t.proc.get(t.proc.stats + "?" + v.Encode())
	}
	heap := HeapInUse()
	if heapProfile != "" {
		if err := writeHeapProfile(heapProfile); err != nil {
			return ProcStats{}, err
		}
	}
	return ProcStats{HeapInuse: heap, Goroutines: runtime.NumGoroutine(), RSS: RSS()}, nil
}

// Workload is what each client does in a loop.
type Workload struct {
	// Kind is "echo", "sleep" or "list" (tools/list, every page).
	Kind string
	// SleepMS is the sleep tool's argument.
	SleepMS int
	// Payload adds a "blob" argument of this many bytes to echo.
	Payload int
}

func (w Workload) String() string {
	switch w.Kind {
	case "sleep":
		return fmt.Sprintf("sleep %dms", w.SleepMS)
	case "list":
		return "tools/list"
	}
	if w.Payload > 0 {
		return fmt.Sprintf("echo + %d B argument", w.Payload)
	}
	return "echo"
}

// Stats is one target's totals over every round of a run.
type Stats struct {
	Target   string
	Calls    int
	Errors   int
	Elapsed  time.Duration
	Lat      []time.Duration // sorted after Finish
	Mallocs  uint64          // whole process, during this target's rounds
	Bytes    uint64
	RSS      uint64        // process VmRSS at the end of this target's last round
	CPU      time.Duration // process CPU time during this target's rounds
	Txs      uint64        // broker store commits during this target's rounds
	Writes   uint64        // writes those commits carried
	Busy     time.Duration // time the broker's store spent committing
	Machine  MachineStats  // the whole machine during this target's rounds (all processes)
	FirstErr error
}

// MachineStats are the whole machine's counters (Linux /proc/stat): CPU
// time spent busy (not idle or waiting for I/O), in ticks of 1/100 s, and
// context switches.
type MachineStats struct {
	BusyTicks, IdleTicks, Switches uint64
}

// machine reads /proc/stat (zeros elsewhere).
func machine() MachineStats {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineStats{}
	}
	var m MachineStats
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 5 && f[0] == "cpu":
			for i, v := range f[1:] {
				n, _ := strconv.ParseUint(v, 10, 64)
				switch i {
				case 3, 4: // idle, iowait
					m.IdleTicks += n
				case 8, 9: // guest time is already in user time
				default:
					m.BusyTicks += n
				}
			}
		case len(f) == 2 && f[0] == "ctxt":
			m.Switches, _ = strconv.ParseUint(f[1], 10, 64)
		}
	}
	return m
}

func (m MachineStats) sub(o MachineStats) MachineStats {
	return MachineStats{BusyTicks: m.BusyTicks - o.BusyTicks, IdleTicks: m.IdleTicks - o.IdleTicks, Switches: m.Switches - o.Switches}
}

func (m *MachineStats) add(o MachineStats) {
	m.BusyTicks += o.BusyTicks
	m.IdleTicks += o.IdleTicks
	m.Switches += o.Switches
}

// MachineCPUPerCall is the whole machine's busy CPU time per call: client,
// target, downstream and kernel together.
func (s *Stats) MachineCPUPerCall() time.Duration {
	return time.Duration(s.Machine.BusyTicks) * 10 * time.Millisecond / time.Duration(max(s.Calls, 1))
}

// MachineIdle is the share of the machine's CPU time that was idle.
func (s *Stats) MachineIdle() float64 {
	return float64(s.Machine.IdleTicks) / float64(max(s.Machine.IdleTicks+s.Machine.BusyTicks, 1))
}

// SwitchesPerCall is the machine's context switches per call.
func (s *Stats) SwitchesPerCall() float64 {
	return float64(s.Machine.Switches) / float64(max(s.Calls, 1))
}

// CallsPerSec is throughput over the target's measured time.
func (s *Stats) CallsPerSec() float64 { return float64(s.Calls) / s.Elapsed.Seconds() }

// Pct is the q-quantile latency (q in [0,1]).
func (s *Stats) Pct(q float64) time.Duration {
	if len(s.Lat) == 0 {
		return 0
	}
	i := int(q * float64(len(s.Lat)-1))
	return s.Lat[i]
}

// AllocsPerCall is the allocation count per call while this target ran:
// in the target's own process if it has one (the downstream's for direct),
// else process-wide (client, target and downstream together).
func (s *Stats) AllocsPerCall() float64 { return float64(s.Mallocs) / float64(max(s.Calls, 1)) }

// CPUPerCall is the process CPU time per call (the target's own process
// if it has one).
func (s *Stats) CPUPerCall() time.Duration { return s.CPU / time.Duration(max(s.Calls, 1)) }

// BytesPerCall is the process-wide allocated bytes per call.
func (s *Stats) BytesPerCall() float64 { return float64(s.Bytes) / float64(max(s.Calls, 1)) }

// Run drives clients concurrent sessions per target for rounds rounds of
// roundDur each, visiting the targets in a new order every round (see
// Sessions.Run), and returns one Stats per target in the order given.
func Run(ctx context.Context, targets []Target, era string, clients int, w Workload, rounds int, roundDur time.Duration) ([]*Stats, error) {
	ss, err := OpenSessions(ctx, targets, era, clients, w)
	if err != nil {
		return nil, err
	}
	defer ss.Close()
	return ss.Run(ctx, w, rounds, roundDur)
}

// Sessions are every target's client sessions, connected and warmed up,
// for runs that keep them (a soak).
type Sessions struct {
	targets []Target
	s       [][]*mcp.ClientSession
}

// OpenSessions connects clients sessions to each target and warms them up
// with a few calls each (not measured).
func OpenSessions(ctx context.Context, targets []Target, era string, clients int, w Workload) (*Sessions, error) {
	ss := &Sessions{targets: targets, s: make([][]*mcp.ClientSession, len(targets))}
	for i, t := range targets {
		for range clients {
			cs, err := Connect(ctx, t.URL, era, t.Token, t.Handle)
			if err != nil {
				ss.Close()
				return nil, fmt.Errorf("%s: %w", t.Name, err)
			}
			ss.s[i] = append(ss.s[i], cs)
		}
	}
	for i, t := range targets {
		warm := &Stats{}
		round(ctx, t, ss.s[i], w, 0, 3, warm)
		if warm.Errors > 0 {
			ss.Close()
			return nil, fmt.Errorf("%s: warm-up failed: %v", t.Name, warm.FirstErr)
		}
	}
	return ss, nil
}

// Close ends every session.
func (ss *Sessions) Close() {
	for _, s := range ss.s {
		for _, cs := range s {
			_ = cs.Close()
		}
	}
}

// Run drives the sessions for rounds rounds of roundDur each, visiting the
// targets in a new order every round, and returns one Stats per target in
// the order given. The orders are shuffled (from a fixed seed, so a run can
// be repeated), not rotated: with a rotation each target always follows
// the same one, and whatever a target leaves behind (its process's
// garbage, its connections' teardown, the downstream's state) would always
// land in the same other target's rounds.
func (ss *Sessions) Run(ctx context.Context, w Workload, rounds int, roundDur time.Duration) ([]*Stats, error) {
	targets, sessions := ss.targets, ss.s
	stats := make([]*Stats, len(targets))
	for i, t := range targets {
		stats[i] = &Stats{Target: t.Name}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range rounds {
		for _, i := range rng.Perm(len(targets)) {
			// Each round starts with no dirty pages: a broker that writes
			// without fsync leaves its writes to the kernel's writeback,
			// which would otherwise land in the next target's round.
			flushDirty()
			runtime.GC()
			c0, err := targets[i].counters()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", targets[i].Name, err)
			}
			m0 := machine()
			t0 := time.Now()
			round(ctx, targets[i], sessions[i], w, roundDur, 0, stats[i])
			stats[i].Elapsed += time.Since(t0)
			stats[i].Machine.add(machine().sub(m0))
			c1, err := targets[i].counters()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", targets[i].Name, err)
			}
			stats[i].Mallocs += c1.Mallocs - c0.Mallocs
			stats[i].Bytes += c1.Bytes - c0.Bytes
			stats[i].RSS = c1.RSS
			stats[i].CPU += c1.CPU - c0.CPU
			stats[i].Txs += c1.Txs - c0.Txs
			stats[i].Writes += c1.Writes - c0.Writes
			stats[i].Busy += c1.Busy - c0.Busy
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	for _, s := range stats {
		slices.Sort(s.Lat)
	}
	return stats, nil
}

// round runs every session in a loop until d has passed (or n calls each
// when d is zero) and adds to st.
func round(ctx context.Context, t Target, ss []*mcp.ClientSession, w Workload, d time.Duration, n int, st *Stats) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	args := map[string]any{"text": "hello world"}
	name := t.Prefix + "echo"
	switch w.Kind {
	case "sleep":
		name, args = t.Prefix+"sleep", map[string]any{"ms": w.SleepMS}
	case "echo":
		if w.Payload > 0 {
			args["blob"] = strings.Repeat("x", w.Payload)
		}
	}
	for _, cs := range ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			var errs int
			var first error
			for i := 0; ; i++ {
				if d > 0 && time.Now().After(deadline) || d == 0 && i >= n {
					break
				}
				t0 := time.Now()
				err := once(ctx, cs, w, name, args)
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			st.Lat = append(st.Lat, lat...)
			st.Calls += len(lat)
			st.Errors += errs
			if st.FirstErr == nil {
				st.FirstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
}

func once(ctx context.Context, cs *mcp.ClientSession, w Workload, name string, args map[string]any) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if w.Kind == "list" {
		var cursor string
		for {
			res, err := cs.ListTools(cctx, &mcp.ListToolsParams{Cursor: cursor})
			if err != nil {
				return err
			}
			if res.NextCursor == "" {
				return nil
			}
			cursor = res.NextCursor
		}
	}
	res, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return err
	}
	if res.IsError {
		return fmt.Errorf("%s: tool error: %s", name, resultText(res))
	}
	return nil
}

// RSS is the process's resident set size in bytes (Linux; 0 elsewhere).
func RSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// HeapInUse is the live heap after a full collection.
func HeapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// WriteTable prints one run's results as a Markdown table with ratios
// against the targets named direct and proxy (if present).
func WriteTable(out io.Writer, title string, stats []*Stats) {
	fmt.Fprintf(out, "\n%s\n\n", title)
	fmt.Fprintln(out, "| target | calls | calls/s | p50 | p90 | p99 | CPU µs/call | allocs/call | KB/call | RSS MiB | records/commit | store busy | machine CPU µs/call | machine idle | switches/call | errors | calls/s ÷ direct | ÷ proxy | p50 − direct |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	by := map[string]*Stats{}
	for _, s := range stats {
		by[s.Target] = s
	}
	direct, proxy := by["direct"], by["proxy"]
	for _, s := range stats {
		rd, rp, add := "", "", ""
		if direct != nil && s != direct && direct.Calls > 0 {
			rd = fmt.Sprintf("%.2f", s.CallsPerSec()/direct.CallsPerSec())
			add = "+" + us(s.Pct(.5)-direct.Pct(.5))
		}
		if proxy != nil && s != proxy && s != direct && proxy.Calls > 0 {
			rp = fmt.Sprintf("%.2f", s.CallsPerSec()/proxy.CallsPerSec())
		}
		batch, busy := "", ""
		if s.Txs > 0 {
			batch = fmt.Sprintf("%.1f", float64(s.Writes)/float64(s.Txs))
			busy = fmt.Sprintf("%.0f%%", 100*s.Busy.Seconds()/s.Elapsed.Seconds())
		}
		fmt.Fprintf(out, "| %s | %d | %.0f | %s | %s | %s | %d | %.0f | %.1f | %.0f | %s | %s | %d | %.0f%% | %.1f | %d | %s | %s | %s |\n",
			s.Target, s.Calls, s.CallsPerSec(), us(s.Pct(.5)), us(s.Pct(.9)), us(s.Pct(.99)), s.CPUPerCall().Microseconds(),
			s.AllocsPerCall(), s.BytesPerCall()/1024, float64(s.RSS)/(1<<20), batch, busy,
			s.MachineCPUPerCall().Microseconds(), 100*s.MachineIdle(), s.SwitchesPerCall(), s.Errors, rd, rp, add)
		if s.FirstErr != nil {
			fmt.Fprintf(out, "|  | first error: %s |||||||||||||||||| \n", strings.ReplaceAll(truncate(s.FirstErr.Error(), 160), "|", "/"))
		}
	}
}

func us(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond || d <= -10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%d µs", d.Microseconds())
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
