package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
)

// RigOptions choose the targets of one run.
type RigOptions struct {
	// Era is what the proxy and the broker speak downstream (the clients'
	// era, so that every target pays for the same protocol once per hop).
	Era string
	// Tools adds filler tools to the downstream (tools/list at scale).
	Tools int
	// Policies are the broker policy-set sizes: one broker per size, the
	// first named "broker", the others "broker-p<N>". Default {50}.
	Policies []int
	// NoSync adds "broker-nosync": the first size with records written but
	// not fsynced.
	NoSync bool
	// NoProxy and NoDirect leave those targets out.
	NoProxy, NoDirect bool
	Logger            *slog.Logger
	// Exe, if set, runs the downstream and every target as child
	// processes of this executable (see RoleFlag); the clients stay here.
	Exe string
	// CPUProfile, with Exe, profiles each broker process into
	// CPUProfile.<target name>.
	CPUProfile string
	// MemProfile, with Exe, writes each broker's heap profile to
	// MemProfile.<target name> when it stops.
	MemProfile string
	// BrokerEnv, with Exe, is added to each broker process's environment
	// (for example GOMAXPROCS=3 or GOGC=200).
	BrokerEnv []string
	// Variants, with Exe, add a broker target (first policy size) per
	// environment, named "broker+<env>": tuning compared in one run.
	Variants [][]string
}

// Rig is a downstream and the targets in front of it.
type Rig struct {
	Targets    []Target
	Downstream *Downstream
	closers    []func() error
}

// NewRig starts the downstream and every target. Close stops them all.
func NewRig(ctx context.Context, o RigOptions) (_ *Rig, err error) {
	if len(o.Policies) == 0 {
		o.Policies = []int{50}
	}
	r := &Rig{}
	defer func() {
		if err != nil {
			_ = r.Close()
		}
	}()
	if o.Exe != "" {
		return r, r.startProcs(ctx, o)
	}
	ds, err := StartDownstream(o.Tools)
	if err != nil {
		return nil, err
	}
	r.Downstream = ds
	r.closers = append(r.closers, ds.Close)
	if !o.NoDirect {
		r.Targets = append(r.Targets, Target{Name: "direct", URL: ds.URL})
	}
	if !o.NoProxy {
		p, err := StartProxy(ctx, ds.URL, o.Era)
		if err != nil {
			return nil, err
		}
		r.closers = append(r.closers, p.Close)
		r.Targets = append(r.Targets, Target{Name: "proxy", URL: p.URL})
	}
	for _, sp := range o.brokers() {
		bt, err := StartBroker(ctx, ds.URL, BrokerOptions{Era: o.Era, Policies: sp.policies, NoSync: sp.nosync, Logger: o.Logger})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sp.name, err)
		}
		r.closers = append(r.closers, bt.Close)
		r.Targets = append(r.Targets, Target{Name: sp.name, URL: bt.URL, Token: coderToken, Handle: bt.Handle, Prefix: "bench__"})
	}
	return r, nil
}

// startProcs is NewRig with every target in its own process.
func (r *Rig) startProcs(ctx context.Context, o RigOptions) error {
	ds, err := startProc(ctx, o.Exe, nil, "downstream", "-tools", fmt.Sprint(o.Tools))
	if err != nil {
		return err
	}
	r.closers = append(r.closers, ds.Close)
	r.Downstream = &Downstream{URL: ds.URL}
	if !o.NoDirect {
		r.Targets = append(r.Targets, Target{Name: "direct", URL: ds.URL, proc: ds})
	}
	if !o.NoProxy {
		p, err := startProc(ctx, o.Exe, nil, "proxy", "-downstream", ds.URL, "-era", o.Era)
		if err != nil {
			return err
		}
		r.closers = append(r.closers, p.Close)
		r.Targets = append(r.Targets, Target{Name: "proxy", URL: p.URL, proc: p})
	}
	for _, sp := range o.brokers() {
		args := []string{"-downstream", ds.URL, "-era", o.Era, "-policies", fmt.Sprint(sp.policies), fmt.Sprintf("-nosync=%t", sp.nosync)}
		if o.CPUProfile != "" {
			args = append(args, "-cpuprofile", o.CPUProfile+"."+sp.name)
		}
		if o.MemProfile != "" {
			args = append(args, "-memprofile", o.MemProfile+"."+sp.name)
		}
		b, err := startProc(ctx, o.Exe, append(slices.Clone(o.BrokerEnv), sp.env...), "broker", args...)
		if err != nil {
			return fmt.Errorf("%s: %w", sp.name, err)
		}
		r.closers = append(r.closers, b.Close)
		r.Targets = append(r.Targets, Target{Name: sp.name, URL: b.URL, Token: coderToken, Handle: b.Handl, Prefix: "bench__", proc: b})
	}
	return nil
}

// brokerSpec is one broker target of a rig.
type brokerSpec struct {
	name     string
	policies int
	nosync   bool
	env      []string // process environment (out-of-process rigs only)
}

// brokers lists the rig's broker targets: one per policy-set size (the
// first named "broker", the others "broker-p<N>"), one per variant
// (out-of-process only), and "broker-nosync".
func (o RigOptions) brokers() []brokerSpec {
	var out []brokerSpec
	for i, n := range o.Policies {
		name := "broker"
		if i > 0 {
			name = fmt.Sprintf("broker-p%d", n)
		}
		out = append(out, brokerSpec{name: name, policies: n})
	}
	if o.Exe != "" {
		for _, env := range o.Variants {
			out = append(out, brokerSpec{name: "broker+" + strings.Join(env, "+"), policies: o.Policies[0], env: env})
		}
	}
	if o.NoSync {
		out = append(out, brokerSpec{name: "broker-nosync", policies: o.Policies[0], nosync: true})
	}
	return out
}

// Close stops every target, the downstream last.
func (r *Rig) Close() error {
	var errs []error
	for i := len(r.closers) - 1; i >= 0; i-- {
		errs = append(errs, r.closers[i]())
	}
	return errors.Join(errs...)
}
