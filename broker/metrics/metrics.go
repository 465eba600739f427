package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace prefixes every metric name.
const namespace = "mcpbroker"

// latencyBuckets span 100µs to ~6.5s, for policy, store and downstream.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 17)

// approvalBuckets span 1s to ~1h: approvals wait for people.
var approvalBuckets = prometheus.ExponentialBuckets(1, 2, 13)

// Metrics holds the broker's Prometheus collectors in a registry of its own
// (never the global default, so tests and several brokers in one process do
// not collide). A nil *Metrics is valid and records nothing.
type Metrics struct {
	reg *prometheus.Registry

	calls          *prometheus.CounterVec
	policy         prometheus.Histogram
	approval       *prometheus.HistogramVec
	downstream     *prometheus.HistogramVec
	store          prometheus.Histogram
	storeLast      prometheus.Gauge
	storeErrors    prometheus.Counter
	ledgerEntries  prometheus.Gauge
	downstreamUp   *prometheus.GaugeVec
	policyReloads  *prometheus.CounterVec
	pendingApprove prometheus.Gauge
}

// New registers the broker's collectors, plus the Go runtime and process
// collectors, in a fresh registry.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "calls_total",
		Help: "Brokered calls by decision (allow, deny, needs_approval) and reason code (empty when allowed).",
	}, []string{"decision", "reason"})
	m.policy = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "policy_duration_seconds",
		Help: "Time to decide a call with Cedar, every pass on the chain included.", Buckets: latencyBuckets,
	})
	m.approval = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "approval_wait_seconds",
		Help: "Time a call waited for a human approval, by outcome.", Buckets: approvalBuckets,
	}, []string{"outcome"})
	m.downstream = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "downstream_duration_seconds",
		Help: "Time a forwarded call spent downstream, by server and outcome status.", Buckets: latencyBuckets,
	}, []string{"server", "status"})
	m.store = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "store_commit_duration_seconds",
		Help: "Time to durably commit one audit record (group commit and fsync included).", Buckets: latencyBuckets,
	})
	m.storeLast = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "store_last_commit_duration_seconds",
		Help: "Duration of the most recent audit commit (fsync included).",
	})
	m.storeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "store_commit_errors_total",
		Help: "Audit records that could not be committed (each denied its call).",
	})
	m.ledgerEntries = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "ledger_entries",
		Help: "Sequence number of the last committed audit ledger entry.",
	})
	m.downstreamUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "downstream_up",
		Help: "1 if the downstream server is connected and initialised, else 0.",
	}, []string{"server"})
	m.policyReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "policy_reloads_total",
		Help: "Policy set loads by result (ok, rejected).",
	}, []string{"result"})
	m.pendingApprove = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "approvals_pending",
		Help: "Calls waiting for a human approval.",
	})
	m.reg.MustRegister(m.calls, m.policy, m.approval, m.downstream, m.store, m.storeLast, m.storeErrors,
		m.ledgerEntries, m.downstreamUp, m.policyReloads, m.pendingApprove,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus exposition format; mount it
// at /metrics. It exposes no argument values, identities or policy text.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry returns the registry, to add collectors or gather in tests.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// CallDecided counts one decided call and observes how long policy took.
// reason is the stable reason code ("" for an allowed call).
func (m *Metrics) CallDecided(decision, reason string, policy time.Duration) {
	if m == nil {
		return
	}
	m.calls.WithLabelValues(decision, reason).Inc()
	if policy > 0 {
		m.policy.Observe(policy.Seconds())
	}
}

// Downstream observes one forwarded call: its server, outcome status (the
// audit status: ok, tool_error, error, cancelled, timeout) and duration.
func (m *Metrics) Downstream(server, status string, d time.Duration) {
	if m == nil {
		return
	}
	m.downstream.WithLabelValues(server, status).Observe(d.Seconds())
}

// ApprovalWait observes how long a call waited for a human, by outcome
// (approved, denied, expired, error).
func (m *Metrics) ApprovalWait(outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.approval.WithLabelValues(outcome).Observe(d.Seconds())
}

// StoreCommit observes one audit commit. Its signature fits
// audit.WithCommitObserver: seq is the committed sequence number (0 on
// failure).
func (m *Metrics) StoreCommit(seq uint64, d time.Duration, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.storeErrors.Inc()
		return
	}
	m.store.Observe(d.Seconds())
	m.storeLast.Set(d.Seconds())
	m.ledgerEntries.Set(float64(seq))
}

// LedgerSize registers a gauge of the store file's size read at scrape time
// from size (for example (*store.Store).Size). Call it once.
func (m *Metrics) LedgerSize(size func() (int64, error)) {
	if m == nil {
		return
	}
	m.gaugeFunc("store_size_bytes", "Size of the bbolt store file holding the audit ledger.", func() float64 {
		n, err := size()
		if err != nil {
			return -1
		}
		return float64(n)
	})
}

// StoreCommits registers counters of the store's committed transactions
// and the writes they carried, read at scrape time from stats (for example
// (*store.Store).CommitStats): their ratio is the group commit's batch size.
func (m *Metrics) StoreCommits(stats func() (txs, writes uint64, busy time.Duration)) {
	if m == nil {
		return
	}
	m.counterFunc("store_transactions_total", "Durable group commits that carried writes: write-ahead log groups, and bbolt transactions with other writes (checkpoints count in store_checkpoints_total).", func() float64 { t, _, _ := stats(); return float64(t) })
	m.counterFunc("store_writes_total", "Writes (audit records and other updates) carried by committed transactions.", func() float64 { _, w, _ := stats(); return float64(w) })
	m.counterFunc("store_commit_busy_seconds_total", "Time the store spent committing (fsync included); its rate near 1 means the ledger's single writer is saturated.", func() float64 { _, _, b := stats(); return b.Seconds() })
}

// StoreCheckpoints registers the store's write-ahead log counters, read at
// scrape time: checkpoints (the log applied to the bbolt file), failed
// checkpoints, and the bytes the log holds that are not yet in the file.
func (m *Metrics) StoreCheckpoints(stats func() (checkpoints, failures uint64, logBytes int64)) {
	if m == nil {
		return
	}
	m.counterFunc("store_checkpoints_total", "Times the ledger's write-ahead log was applied to the bbolt file.", func() float64 { c, _, _ := stats(); return float64(c) })
	m.counterFunc("store_checkpoint_failures_total", "Checkpoints that failed; their records stay durable in the write-ahead log and are retried.", func() float64 { _, f, _ := stats(); return float64(f) })
	m.gaugeFunc("store_wal_bytes", "Bytes of audit records in the write-ahead log not yet in the bbolt file (appends fail at 64 MiB).", func() float64 { _, _, b := stats(); return float64(b) })
}

// FastLane registers counters of the tools/call fast lane, read at scrape
// time: calls it served, and how many of those it handed over to mcp-go
// mid-call (relays that needed the agent's session).
func (m *Metrics) FastLane(served, handedOver func() int64) {
	if m == nil {
		return
	}
	m.counterFunc("fastlane_calls_total", "tools/call requests served by the face's fast lane (the rest go through mcp-go).", func() float64 { return float64(served()) })
	m.counterFunc("fastlane_handovers_total", "Fast-lane calls handed over to mcp-go mid-call because a relay needed the agent's session.", func() float64 { return float64(handedOver()) })
}

// DownstreamHealth sets whether a downstream server is up.
func (m *Metrics) DownstreamHealth(server string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.downstreamUp.WithLabelValues(server).Set(v)
}

// PolicyReload counts one policy set load; ok false means it was rejected
// and the previous set stayed in force.
func (m *Metrics) PolicyReload(ok bool) {
	if m == nil {
		return
	}
	r := "ok"
	if !ok {
		r = "rejected"
	}
	m.policyReloads.WithLabelValues(r).Inc()
}

// PendingApprovals sets the number of calls waiting for a human.
func (m *Metrics) PendingApprovals(n int) {
	if m == nil {
		return
	}
	m.pendingApprove.Set(float64(n))
}

// counterFunc registers a counter read at scrape time from f.
func (m *Metrics) counterFunc(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, f))
}

// gaugeFunc registers a gauge read at scrape time from f.
func (m *Metrics) gaugeFunc(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, f))
}
