package main

// The policy subcommands work offline, on a policy directory, with no broker
// running. The Baseline is always compiled alongside DIR, as the broker does.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mcpbroker/mcpbroker/broker"
	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/broker/store"
	"github.com/mcpbroker/mcpbroker/policies"
)

const policyUsage = `Usage:
  mcpbroker policy validate [--demo] DIR
  mcpbroker policy test [--demo] [--json] DIR...
  mcpbroker policy explain --agent ID --initiator ID --tool SERVER/TOOL [--args JSON] [--chain ID,ID]
        [--groups a,b] [--tenant T] [--workload] [--spend-limit N] [--class ID=c1,c2]...
        [--read-only] [--destructive=false] [--idempotent] [--open-world=false] [--risk-tags a,b]
        [--target-tenant T] [--approval] [--policies DIR | --demo] [--candidate DIR] [--json]
  mcpbroker policy suggest --data DIR [--since 24h] [--coarse] [--out FILE]
`

func policyCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	switch args[0] {
	case "validate":
		return policyValidate(args[1:], stdout, stderr)
	case "test":
		return policyTest(args[1:], stdout, stderr)
	case "explain":
		return policyExplain(args[1:], stdout, stderr)
	case "suggest":
		return policySuggest(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, policyUsage)
		return 0
	}
	fmt.Fprintf(stderr, "mcpbroker policy: unknown subcommand %q\n\n%s", args[0], policyUsage)
	return 2
}

// baseSources is what the broker always compiles next to the operator's
// directory.
func baseSources(demo bool) []policies.Source {
	srcs := policies.Baseline()
	if demo {
		srcs = append(srcs, policies.Demo()...)
	}
	return srcs
}

// printProblems writes every problem of a joined error on its own line.
func printProblems(w io.Writer, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			printProblems(w, e)
		}
		return
	}
	fmt.Fprintln(w, err)
}

func policyValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	demo := fs.Bool("demo", false, "also load the embedded demo policies")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	dir := fs.Arg(0)
	set, err := policies.LoadDir(dir, baseSources(*demo)...)
	if err != nil {
		printProblems(stderr, err)
		fmt.Fprintf(stderr, "%s: policy set rejected\n", dir)
		return 1
	}
	// Corpora next to the policies are checked for syntax too (test runs them).
	if _, err := policies.ReadCorpora(dir); err != nil && !errors.Is(err, policies.ErrNoCorpus) {
		printProblems(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %d policies (%d log_only, baseline included), %s\n", dir, set.Len(), len(set.LogOnlyIDs()), set.Digest())
	return 0
}

func policyTest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	demo := fs.Bool("demo", false, "also load the embedded demo policies")
	asJSON := fs.Bool("json", false, "print one JSON result per case")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	failed, total := 0, 0
	for _, dir := range fs.Args() {
		set, err := policies.LoadDir(dir, baseSources(*demo)...)
		if err != nil {
			printProblems(stderr, err)
			fmt.Fprintf(stderr, "%s: policy set rejected\n", dir)
			return 1
		}
		cases, err := policies.ReadCorpora(dir)
		if err != nil {
			printProblems(stderr, err)
			return 1
		}
		for _, r := range policies.RunCorpus(set, cases) {
			total++
			if !r.Passed {
				failed++
			}
			if *asJSON {
				out := struct {
					policies.CaseResult
					Decision  policies.Outcome `json:"decision"`
					PolicyIDs []string         `json:"policy_ids"`
				}{r, r.Got.Outcome, r.Got.PolicyIDs}
				if err := json.NewEncoder(stdout).Encode(out); err != nil {
					return 1
				}
				continue
			}
			if r.Passed {
				fmt.Fprintf(stdout, "PASS  %s\n", r.Case.Name)
				continue
			}
			fmt.Fprintf(stdout, "FAIL  %s (%s:%d)\n", r.Case.Name, r.Case.File, r.Case.Line)
			for _, p := range r.Problems {
				fmt.Fprintf(stdout, "        %s\n", p)
			}
		}
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "%d cases, %d passed, %d failed\n", total, total-failed, failed)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func policyExplain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	agent := fs.String("agent", "", "acting agent ID (SPIFFE ID)")
	chain := fs.String("chain", "", "comma-separated agent IDs of the delegation chain, outermost first (--agent is appended if not last)")
	var classes listFlag
	fs.Var(&classes, "class", "agent classes as ID=class1,class2 (repeatable)")
	initiator := fs.String("initiator", "", "initiator ID (OIDC subject, or SPIFFE ID with --workload)")
	workload := fs.Bool("workload", false, "the initiator is a workload, not a user")
	groups := fs.String("groups", "", "comma-separated initiator groups")
	tenant := fs.String("tenant", "", "initiator tenant")
	spend := fs.Int64("spend-limit", -1, "initiator spend limit in minor units (-1 = none)")
	toolName := fs.String("tool", "", "SERVER/TOOL")
	action := fs.String("action", "call_tool", "call_tool or list_tools")
	exposed := fs.String("exposed", "", "name the agent sees (default SERVER__TOOL)")
	readOnly := fs.Bool("read-only", false, "readOnlyHint")
	destructive := fs.Bool("destructive", true, "destructiveHint")
	idempotent := fs.Bool("idempotent", false, "idempotentHint")
	openWorld := fs.Bool("open-world", true, "openWorldHint")
	riskTags := fs.String("risk-tags", "", "comma-separated tool risk tags")
	targetTenant := fs.String("target-tenant", "", "tenant of the tool's server")
	argsJSON := fs.String("args", "{}", "canonical arguments as a JSON object")
	callID := fs.String("call-id", "call-1", "call ID")
	approval := fs.Bool("approval", false, "add a granted approval for this call")
	dir := fs.String("policies", "", "policy directory")
	demo := fs.Bool("demo", false, "use the embedded demo policies")
	candDir := fs.String("candidate", "", "candidate policy directory evaluated next to --policies (never enforced)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 || *initiator == "" || *toolName == "" || (*agent == "" && *chain == "") || (*dir == "" && !*demo) {
		fmt.Fprintln(stderr, "mcpbroker policy explain: need --agent or --chain, --initiator, --tool, and --policies DIR or --demo")
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	var set *policies.Set
	var err error
	if *dir != "" {
		set, err = policies.LoadDir(*dir, baseSources(*demo)...)
	} else {
		set, err = policies.Compile(baseSources(true))
	}
	if err != nil {
		printProblems(stderr, err)
		return 1
	}
	eng := policies.NewEngine(set)
	if *candDir != "" {
		cand, err := policies.LoadDir(*candDir, baseSources(*demo)...)
		if err != nil {
			printProblems(stderr, err)
			fmt.Fprintln(stderr, "candidate policy set rejected")
			return 1
		}
		eng.SetCandidate(cand)
	}

	cr := policies.CaseRequest{
		CallID: *callID, Action: *action, Tool: *toolName, Exposed: *exposed,
		Initiator: policies.CaseInitiator{ID: *initiator, Tenant: *tenant, Groups: splitList(*groups)},
		RiskTags:  splitList(*riskTags), Tenant: *targetTenant,
		Hints: policies.CaseHints{ReadOnly: readOnly, Destructive: destructive, Idempotent: idempotent, OpenWorld: openWorld},
	}
	if *workload {
		cr.Initiator.Kind = string(policies.InitiatorWorkload)
	}
	if *spend >= 0 {
		cr.Initiator.SpendLimit = spend
	}
	classOf := map[string][]string{}
	for _, c := range classes {
		id, cls, ok := strings.Cut(c, "=")
		if !ok {
			fmt.Fprintf(stderr, "mcpbroker policy explain: --class %q: want ID=class1,class2\n", c)
			return 2
		}
		classOf[id] = splitList(cls)
	}
	ids := splitList(*chain)
	if *agent != "" && (len(ids) == 0 || ids[len(ids)-1] != *agent) {
		ids = append(ids, *agent)
	}
	for _, id := range ids {
		cr.Chain = append(cr.Chain, policies.CaseAgent{ID: id, Classes: classOf[id]})
	}
	dec := json.NewDecoder(strings.NewReader(*argsJSON))
	dec.UseNumber()
	var rawArgs map[string]any
	if err := dec.Decode(&rawArgs); err != nil {
		fmt.Fprintf(stderr, "mcpbroker policy explain: --args: %v\n", err)
		return 2
	}
	cr.Args = map[string]any{}
	for k, v := range rawArgs {
		if n, ok := v.(json.Number); ok {
			i, err := n.Int64()
			if err != nil {
				fmt.Fprintf(stderr, "mcpbroker policy explain: --args: %s: %v is not an integer (money is in minor units)\n", k, n)
				return 2
			}
			v = i
		}
		cr.Args[k] = v
	}
	if *approval {
		cr.Approval = &policies.CaseApproval{Approver: "policy-explain"}
	}
	req, err := cr.ToRequest()
	if err != nil {
		fmt.Fprintf(stderr, "mcpbroker policy explain: %v\n", err)
		return 2
	}
	req.Now = time.Now().UTC()
	x := eng.Explain(req)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(x); err != nil {
			return 1
		}
		return 0
	}
	writeExplanation(stdout, x)
	return 0
}

func writeExplanation(w io.Writer, x policies.Explanation) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "decision: %s\n", strings.ToUpper(string(x.Outcome)))
	if x.DeniedBy != "" {
		fmt.Fprintf(&b, "denied by: %s\n", x.DeniedBy)
	}
	fmt.Fprintf(&b, "policy set: %s\n", x.Digest)
	if x.Invalid != "" {
		fmt.Fprintf(&b, "invalid request: %s\n", x.Invalid)
	}
	for i, p := range x.Passes {
		verdict := "allow"
		if !p.Allowed {
			verdict = "DENY"
		}
		fmt.Fprintf(&b, "\npass %d  %s  %s  (cedar: %s, %d policies evaluated)\n", i+1, p.Principal, verdict, p.Cedar, p.Evaluated)
		if len(p.Determining) == 0 && p.Cedar == "deny" {
			b.WriteString("  no policy permits this (default deny)\n")
		}
		for _, d := range p.Determining {
			extra := ""
			if d.Approval != "" {
				extra = fmt.Sprintf("  @approval(%q)", d.Approval)
			}
			fmt.Fprintf(&b, "  %-6s %s  %s%s\n", d.Effect, d.ID, d.Position, extra)
		}
		for _, e := range p.Errors {
			fmt.Fprintf(&b, "  error  %s  %s: %s\n", e.ID, e.Position, e.Message)
		}
	}
	if x.ApprovalNote != "" {
		fmt.Fprintf(&b, "\napproval: %s\n", x.ApprovalNote)
	}
	if x.ShadowOutcome != "" {
		fmt.Fprintf(&b, "\nlog_only policies (not enforced): would be %s\n", x.ShadowOutcome)
		for _, s := range x.Shadow {
			fmt.Fprintf(&b, "  %s %s in %s\n", s.Effect, s.PolicyID, s.Principal)
		}
	}
	if c := x.Candidate; c != nil {
		fmt.Fprintf(&b, "\ncandidate set %s (not enforced): %s", c.Digest, c.Outcome)
		if c.DeniedBy != "" {
			fmt.Fprintf(&b, ", denied by %s", c.DeniedBy)
		}
		fmt.Fprintf(&b, ", policies %v\n", c.PolicyIDs)
	}
	_, _ = w.Write(b.Bytes())
}

func policySuggest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy suggest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./mcpbroker-data", "data directory of the broker")
	since := fs.Duration("since", 24*time.Hour, "look back this far")
	coarse := fs.Bool("coarse", false, "grant whole servers instead of the tools seen")
	out := fs.String("out", "", "write the Cedar text to FILE instead of stdout")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 || *since <= 0 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	entries, err := readDecisions(*data, time.Now().Add(-*since))
	if err != nil {
		fmt.Fprintf(stderr, "mcpbroker policy suggest: %v\n", err)
		return 1
	}
	obs := make([]policies.Observation, 0, len(entries))
	for _, e := range entries {
		ev := e.Event
		o := policies.Observation{Time: ev.Time, Server: ev.Server, Target: ev.Target, Decision: ev.Decision, ArgsDigest: ev.ArgsDigest}
		switch ev.Method {
		case "tools/call":
			o.Action = policies.ActionCallTool
		case "resources/read":
			o.Action = policies.ActionReadResource
		case "prompts/get":
			o.Action = policies.ActionGetPrompt
		default:
			continue
		}
		for _, p := range ev.Passes {
			o.Principals = append(o.Principals, p.Principal)
		}
		obs = append(obs, o)
	}
	text, err := policies.Suggest(obs, policies.SuggestOptions{Coarse: *coarse})
	if err != nil {
		fmt.Fprintf(stderr, "mcpbroker policy suggest: %d call decisions since %s: %v\n", len(entries), since, err)
		return 1
	}
	if *out != "" {
		if err := os.WriteFile(*out, text, 0o644); err != nil {
			fmt.Fprintf(stderr, "mcpbroker policy suggest: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "wrote %s (%d call decisions)\n", *out, len(entries))
		return 0
	}
	_, _ = stdout.Write(text)
	return 0
}

// readDecisions returns the call.decided entries since t from the store,
// opened read-only (a shared lock: it works next to a running broker only if
// that broker does not hold the file exclusively; stop it or copy the file).
func readDecisions(dir string, t time.Time) ([]audit.Entry, error) {
	path := filepath.Join(dir, broker.DBFile)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no audit data in %s: %w", dir, err)
	}
	st, err := store.Open(path, store.Options{ReadOnly: true, LockTimeout: time.Second})
	if errors.Is(err, store.ErrPendingLog) {
		if err = applyLog(path); err == nil {
			st, err = store.Open(path, store.Options{ReadOnly: true, LockTimeout: time.Second})
		}
	}
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return audit.List(st, audit.Filter{Type: audit.CallDecided, Since: t})
}
