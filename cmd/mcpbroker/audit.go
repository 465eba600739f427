package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mcpbroker/mcpbroker/broker"
	"github.com/mcpbroker/mcpbroker/broker/audit"
	"github.com/mcpbroker/mcpbroker/broker/store"
)

const auditUsage = `Usage:
  mcpbroker audit list   [--data DIR] [filters] [--limit N] [--json]
  mcpbroker audit query  [--data DIR] [filters] [--limit N] [--table]
  mcpbroker audit show   [--data DIR] SEQ
  mcpbroker audit verify [--data DIR | --file EXPORT.jsonl] [--pubkey KEY|FILE] [--anchor FILE] [--json]
  mcpbroker audit export [--data DIR] [--format jsonl|otlp] [--since SEQ|TIME] [--until SEQ] [--out FILE] [--endpoint URL]
  mcpbroker audit hash   [--data DIR] VALUE
  mcpbroker audit compact [--data DIR] --before TIME --archive FILE
  mcpbroker audit pubkey [--data DIR]

Filters: --since/--until (RFC 3339 or a duration ago: 90m, 24h, 7d), --type, --agent,
--initiator, --tenant, --tool (alias --target), --server, --method, --decision,
--status, --reason, --session, --chain AGENT, --call-id.

While a broker runs, read commands ask it over the admin socket in DIR;
otherwise they open the store read-only. verify and export work on a copy
of the data directory with no broker running.
`

// auditTimeout bounds one admin-socket request.
const auditTimeout = 30 * time.Second

func auditCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	var code int
	switch sub {
	case "list":
		code = auditList(args, false, stdout, stderr)
	case "query":
		code = auditList(args, true, stdout, stderr)
	case "show":
		code = auditShow(args, stdout, stderr)
	case "verify":
		code = auditVerify(args, stdout, stderr)
	case "export":
		code = auditExport(args, stdout, stderr)
	case "hash":
		code = auditHash(args, stdout, stderr)
	case "compact":
		code = auditCompact(args, stdout, stderr)
	case "pubkey":
		code = auditPubkey(args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, auditUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "mcpbroker audit: unknown command %q\n\n%s", sub, auditUsage)
		return 2
	}
	return code
}

func auditFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("audit "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./mcpbroker-data", "data directory")
	return fs, data
}

// parseArgs parses flags and positionals in any order (flag stops at the
// first positional otherwise).
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "mcpbroker audit: %v\n", err)
	return 1
}

func auditList(args []string, query bool, stdout, stderr io.Writer) int {
	fs, data := auditFlags(map[bool]string{false: "list", true: "query"}[query], stderr)
	var f audit.Filter
	typ := fs.String("type", "", "event type, e.g. call.decided")
	since := fs.String("since", "", "from this time (RFC 3339, or a duration ago: 24h, 7d)")
	until := fs.String("until", "", "before this time (RFC 3339, or a duration ago)")
	fs.StringVar(&f.Agent, "agent", "", "acting agent SPIFFE ID")
	fs.StringVar(&f.Initiator, "initiator", "", "initiator")
	fs.StringVar(&f.Tenant, "tenant", "", "tenant")
	fs.StringVar(&f.Target, "tool", "", "tool name as the agent sees it, resource URI or prompt")
	fs.StringVar(&f.Target, "target", "", "alias of --tool")
	fs.StringVar(&f.Server, "server", "", "downstream server name")
	fs.StringVar(&f.Method, "method", "", "MCP method, e.g. tools/call")
	fs.StringVar(&f.CallID, "call-id", "", "call ID")
	fs.StringVar(&f.Decision, "decision", "", "allow, deny or needs_approval")
	fs.StringVar(&f.Status, "status", "", "outcome status: ok, tool_error, error, cancelled, timeout")
	fs.StringVar(&f.Reason, "reason", "", "reason code or error class")
	fs.StringVar(&f.Session, "session", "", "session ID")
	fs.StringVar(&f.Chain, "chain", "", "an agent anywhere on the delegation chain")
	fs.IntVar(&f.Limit, "limit", 0, "at most N entries (the latest)")
	asJSON := fs.Bool("json", query, "print JSON lines instead of a table")
	table := fs.Bool("table", false, "print a table (query prints JSON lines by default)")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		if err == nil {
			fmt.Fprintf(stderr, "mcpbroker audit: unexpected argument %q\n", pos[0])
		}
		return 2
	}
	f.Type = audit.Type(*typ)
	now := time.Now()
	var err error
	if f.Since, err = parseWhen(*since, now); err != nil {
		return fail(stderr, fmt.Errorf("--since: %w", err))
	}
	if f.Until, err = parseWhen(*until, now); err != nil {
		return fail(stderr, fmt.Errorf("--until: %w", err))
	}
	entries, err := listAudit(*data, f)
	if err != nil {
		return fail(stderr, err)
	}
	return printEntries(stdout, stderr, entries, *asJSON && !*table)
}

func printEntries(stdout, stderr io.Writer, entries []audit.Entry, asJSON bool) int {
	if asJSON {
		enc := json.NewEncoder(stdout)
		for _, e := range entries {
			if err := enc.Encode(e); err != nil {
				return 1
			}
		}
		return 0
	}
	if err := audit.WriteTable(stdout, entries); err != nil {
		return fail(stderr, err)
	}
	return 0
}

// parseWhen accepts "", RFC 3339, or a duration before now (Go syntax, plus
// a "d" suffix for days).
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	d, err := parseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 24h or 7d", s)
	}
	return now.Add(-d), nil
}

func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err != nil {
			return 0, err
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	return time.ParseDuration(s)
}

func auditShow(args []string, stdout, stderr io.Writer) int {
	fs, data := auditFlags("show", stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: mcpbroker audit show [--data DIR] SEQ")
		return 2
	}
	seq, err := strconv.ParseUint(pos[0], 10, 64)
	if err != nil || seq == 0 {
		fmt.Fprintf(stderr, "mcpbroker audit show: %q is not a sequence number\n", pos[0])
		return 2
	}
	entries, err := listAudit(*data, audit.Filter{FromSeq: seq, ToSeq: seq})
	if err != nil {
		return fail(stderr, err)
	}
	if len(entries) == 0 {
		return fail(stderr, fmt.Errorf("no entry with seq %d", seq))
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(entries[0]); err != nil {
		return 1
	}
	return 0
}

func auditVerify(args []string, stdout, stderr io.Writer) int {
	fs, data := auditFlags("verify", stderr)
	file := fs.String("file", "", "verify an export or compaction archive (JSONL) instead of a data directory")
	pub := fs.String("pubkey", "", "pin the checkpoint key: ed25519:<hex>, or a file holding it (default: derived from DIR/"+audit.SigningKeyFile+")")
	anchorPath := fs.String("anchor", "", "a signed anchor checkpoint kept elsewhere (default: DIR/"+audit.AnchorFile+" if present)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	sealed := fs.Bool("sealed", false, "with --file: fail unless a signed trailer follows the last entry (so its end cannot have been cut)")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		return 2
	}
	dataSet := false
	fs.Visit(func(f *flag.Flag) { dataSet = dataSet || f.Name == "data" })
	opts := audit.VerifyOptions{RequireSealed: *sealed}
	var err error
	if opts.PublicKey, err = pinnedKey(*pub, *data, *file == "" || dataSet); err != nil {
		return fail(stderr, err)
	}
	if opts.Anchor, err = anchor(*anchorPath, *data, *file == "" || dataSet); err != nil {
		return fail(stderr, err)
	}

	var rep audit.Report
	var verr error
	source := *file
	if *file != "" {
		f, err := os.Open(*file)
		if err != nil {
			return fail(stderr, err)
		}
		rep, verr = audit.VerifyJSONL(f, opts)
		f.Close()
	} else {
		source = *data
		rep, verr, err = verifyDir(*data, opts)
		if err != nil {
			return fail(stderr, err)
		}
	}
	var ce *audit.ChainError
	if verr != nil && !errors.As(verr, &ce) {
		return fail(stderr, verr)
	}
	if *asJSON {
		res := audit.VerifyResult{OK: verr == nil, Report: rep}
		if ce != nil {
			res.Seq, res.Reason = ce.Seq, ce.Reason
		}
		_ = json.NewEncoder(stdout).Encode(res)
	} else if ce != nil {
		fmt.Fprintf(stderr, "FAIL %s: seq %d: %s (%d entries before it verified)\n", source, ce.Seq, ce.Reason, rep.Entries)
	} else {
		printReport(stdout, source, rep)
	}
	if verr != nil {
		return 1
	}
	return 0
}

func printReport(w io.Writer, source string, rep audit.Report) {
	if rep.Entries == 0 {
		fmt.Fprintf(w, "ok %s: empty ledger\n", source)
		return
	}
	fmt.Fprintf(w, "ok %s: %d entries, seq %d..%d, %d checkpoints, signed through seq %d", source, rep.Entries, rep.First, rep.Last, rep.Checkpoints, rep.Signed)
	if rep.Last > rep.Signed {
		fmt.Fprintf(w, " (%d unsigned after it)", rep.Last-rep.Signed)
	}
	fmt.Fprintln(w)
	if rep.Base != nil {
		fmt.Fprintf(w, "  compacted: starts after signed base seq %d\n", rep.Base.Seq)
	}
	if rep.Unanchored {
		fmt.Fprintf(w, "  note: starts at seq %d; its prev hash is taken as given\n", rep.First)
	}
	if rep.Anchored {
		fmt.Fprintln(w, "  anchor checkpoint found and matches")
	}
	if rep.Sealed {
		fmt.Fprintln(w, "  sealed: the signed trailer vouches for exactly these entries")
	} else if strings.HasSuffix(source, ".jsonl") || rep.Unanchored {
		fmt.Fprintln(w, "  note: not sealed (no signed trailer): a cut end would go unnoticed")
	}
	if !rep.KeyPinned && rep.Checkpoints > 0 {
		fmt.Fprintln(w, "  warning: checkpoint key not pinned (give --pubkey): signatures prove integrity, not origin")
	}
}

// verifyDir verifies the ledger in a data directory: through the running
// broker if its admin socket answers, else the file read-only (with bbolt's
// consistency check). verr is the verification result, err a failure to
// verify at all.
func verifyDir(dir string, opts audit.VerifyOptions) (rep audit.Report, verr, err error) {
	var remoteErr error
	if sock := filepath.Join(dir, broker.AdminSocket); exists(sock) {
		ctx, cancel := context.WithTimeout(context.Background(), auditTimeout)
		res, rerr := audit.VerifyRemote(ctx, sock)
		cancel()
		if rerr == nil {
			if res.Err() != nil {
				return res.Report, res.Err(), nil
			}
			// The socket's word is not proof (anyone who can write DIR
			// can put a socket there): verify what it serves, here, with
			// the pinned key and anchor, which a planted socket cannot
			// forge signatures for.
			served := opts
			served.Base = res.Report.Base // its claim is checked: signed as a base, and joined by the first entry
			local, lerr, err := verifyServed(sock, served)
			if err != nil || lerr != nil {
				return local, lerr, err
			}
			return local, nil, nil
		}
		remoteErr = rerr
	}
	st, err := openStore(dir, remoteErr)
	if err != nil {
		return rep, nil, err
	}
	defer st.Close()
	if err := st.Check(); err != nil {
		return rep, nil, fmt.Errorf("store file is corrupt: %w", err)
	}
	rep, verr = audit.VerifyStore(st, opts)
	return rep, verr, nil
}

// pinnedKey resolves --pubkey, or derives the key from the data dir's
// signing key when useDir and it exists.
func pinnedKey(flagVal, dir string, useDir bool) ([]byte, error) {
	if flagVal != "" {
		v := flagVal
		if b, err := os.ReadFile(flagVal); err == nil {
			v = string(b)
		}
		k, err := audit.ParsePublicKey(v)
		if err != nil {
			return nil, fmt.Errorf("--pubkey: %w", err)
		}
		return k, nil
	}
	path := filepath.Join(dir, audit.SigningKeyFile)
	if !useDir || !exists(path) {
		return nil, nil
	}
	s, err := audit.LoadSigner(path)
	if err != nil {
		return nil, err
	}
	return s.PublicKey(), nil
}

func anchor(flagVal, dir string, useDir bool) (*audit.Checkpoint, error) {
	path := flagVal
	if path == "" {
		path = filepath.Join(dir, audit.AnchorFile)
		if !useDir || !exists(path) {
			return nil, nil
		}
	}
	return audit.ReadAnchor(path)
}

func auditExport(args []string, stdout, stderr io.Writer) int {
	fs, data := auditFlags("export", stderr)
	format := fs.String("format", "jsonl", "jsonl (to stdout or --out) or otlp (OTLP/HTTP logs to --endpoint)")
	endpoint := fs.String("endpoint", "", "OTLP/HTTP logs URL (default: $OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, or $OTEL_EXPORTER_OTLP_ENDPOINT + /v1/logs)")
	since := fs.String("since", "", "first sequence number (inclusive; resume with the last exported + 1), or a time (RFC 3339 or a duration ago)")
	until := fs.String("until", "", "last sequence number (inclusive)")
	out := fs.String("out", "", "write to FILE (created, mode 0600) instead of stdout")
	signingKey := fs.String("signing-key", "", "the key that seals an export read from the file (default: DIR/"+audit.SigningKeyFile+"; the broker's audit.signing_key)")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		return 2
	}
	if *format != "jsonl" && *format != "otlp" {
		return fail(stderr, fmt.Errorf("export format %q is not supported (jsonl, otlp)", *format))
	}
	var opts audit.ExportOptions
	if *since != "" {
		if n, err := strconv.ParseUint(*since, 10, 64); err == nil {
			opts.From = n
		} else if opts.Since, err = parseWhen(*since, time.Now()); err != nil {
			return fail(stderr, fmt.Errorf("--since: %w", err))
		}
	}
	if *until != "" {
		n, err := strconv.ParseUint(*until, 10, 64)
		if err != nil {
			return fail(stderr, fmt.Errorf("--until: want a sequence number: %w", err))
		}
		opts.To = n
	}
	if *format == "otlp" {
		ep := *endpoint
		if ep == "" {
			ep = os.Getenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
		}
		if ep == "" {
			if base := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); base != "" {
				ep = strings.TrimSuffix(base, "/") + "/v1/logs"
			}
		}
		if ep == "" {
			return fail(stderr, fmt.Errorf("--format otlp needs --endpoint or OTEL_EXPORTER_OTLP_ENDPOINT"))
		}
		pr, pw := io.Pipe()
		go func() {
			_, _, err := exportAudit(*data, *signingKey, pw, opts)
			_ = pw.CloseWithError(err)
		}()
		n, last, err := audit.ExportOTLP(context.Background(), pr, audit.OTLPOptions{Endpoint: ep, Version: version})
		_ = pr.Close()
		if err != nil {
			if n > 0 {
				fmt.Fprintf(stderr, "sent %d entries before the error; resume with --since %d\n", n, last+1)
			}
			return fail(stderr, err)
		}
		fmt.Fprintf(stderr, "sent %d entries to %s, last seq %d; resume with --since %d\n", n, ep, last, last+1)
		return 0
	}
	w := stdout
	var f *os.File
	if *out != "" {
		var err error
		if f, err = os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
			return fail(stderr, err)
		}
		defer f.Close()
		w = f
	}
	n, last, err := exportAudit(*data, *signingKey, w, opts)
	if err == nil && f != nil {
		err = f.Sync()
	}
	if err != nil {
		return fail(stderr, err)
	}
	if n > 0 {
		fmt.Fprintf(stderr, "exported %d entries, last seq %d; resume with --since %d\n", n, last, last+1)
	} else {
		fmt.Fprintln(stderr, "exported 0 entries")
	}
	return 0
}

func exportAudit(dir, signingKey string, w io.Writer, opts audit.ExportOptions) (int, uint64, error) {
	var remoteErr error
	if sock := filepath.Join(dir, broker.AdminSocket); exists(sock) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		n, last, err := audit.ExportRemote(ctx, sock, w, opts)
		if err == nil || n > 0 {
			return n, last, err // a partial stream cannot be retried from the file
		}
		remoteErr = err
	}
	st, err := openStore(dir, remoteErr)
	if err != nil {
		return 0, 0, err
	}
	defer st.Close()
	if s, err := audit.LoadSigner(orIn(signingKey, dir, audit.SigningKeyFile)); err == nil {
		opts.Signer = s // sealed, as the broker's exports are
	} else if signingKey != "" {
		return 0, 0, err
	}
	return audit.Export(context.Background(), st, w, opts)
}

func auditHash(args []string, stdout, stderr io.Writer) int {
	fs, data := auditFlags("hash", stderr)
	keyPath := fs.String("hmac-key", "", "the HMAC key (default: DIR/"+broker.KeyFile+"; the broker's audit.hmac_key)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: mcpbroker audit hash [--data DIR] VALUE")
		return 2
	}
	h, err := audit.LoadKey(orIn(*keyPath, *data, broker.KeyFile))
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintln(stdout, h.Digest([]byte(pos[0])))
	return 0
}

func auditPubkey(args []string, stdout, stderr io.Writer) int {
	fs, data := auditFlags("pubkey", stderr)
	keyPath := fs.String("signing-key", "", "the signing key (default: DIR/"+audit.SigningKeyFile+"; the broker's audit.signing_key)")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		return 2
	}
	s, err := audit.LoadSigner(orIn(*keyPath, *data, audit.SigningKeyFile))
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintln(stdout, audit.FormatPublicKey(s.PublicKey()))
	return 0
}

func auditCompact(args []string, stdout, stderr io.Writer) int {
	fs, data := auditFlags("compact", stderr)
	before := fs.String("before", "", "archive entries recorded before this time (RFC 3339 or a duration ago)")
	archive := fs.String("archive", "", "JSONL file to write the archived entries to (must not exist)")
	keyPath := fs.String("signing-key", "", "the signing key (default: DIR/"+audit.SigningKeyFile+"; the broker's audit.signing_key)")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) > 0 {
		return 2
	}
	if *before == "" || *archive == "" {
		fmt.Fprintln(stderr, "usage: mcpbroker audit compact [--data DIR] --before TIME --archive FILE")
		return 2
	}
	t, err := parseWhen(*before, time.Now())
	if err != nil {
		return fail(stderr, fmt.Errorf("--before: %w", err))
	}
	path := filepath.Join(*data, broker.DBFile)
	if !exists(path) {
		return fail(stderr, fmt.Errorf("no audit data in %s", *data))
	}
	st, err := store.Open(path, store.Options{LockTimeout: time.Second})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return fail(stderr, fmt.Errorf("a broker is running on %s: stop it before compacting: %w", *data, err))
		}
		return fail(stderr, err)
	}
	defer st.Close()
	signer, err := audit.LoadSigner(orIn(*keyPath, *data, audit.SigningKeyFile))
	if err != nil {
		return fail(stderr, err)
	}
	f, err := os.OpenFile(*archive, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fail(stderr, err)
	}
	res, err := audit.Compact(context.Background(), st, signer, t, f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if res.Archived == 0 {
			_ = os.Remove(*archive)
		}
		return fail(stderr, err)
	}
	if res.Archived == 0 {
		_ = os.Remove(*archive)
		fmt.Fprintf(stdout, "nothing recorded before %s (the newest entry is always kept)\n", t.UTC().Format(time.RFC3339))
		return 0
	}
	fmt.Fprintf(stdout, "archived %d entries (seq %d..%d) to %s; the ledger now starts after a signed checkpoint of seq %d\n",
		res.Archived, res.First, res.Last, *archive, res.Last)
	return 0
}

// listAudit asks a running broker over its admin socket, or reads the file
// directly when no broker holds it. It never waits on the lock for long.
func listAudit(dir string, f audit.Filter) ([]audit.Entry, error) {
	var remoteErr error
	if sock := filepath.Join(dir, broker.AdminSocket); exists(sock) {
		ctx, cancel := context.WithTimeout(context.Background(), auditTimeout)
		defer cancel()
		entries, err := audit.ListRemote(ctx, sock, f)
		if err == nil {
			return entries, nil
		}
		remoteErr = err
	}
	st, err := openStore(dir, remoteErr)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return audit.List(st, f)
}

// applyLog opens the store at path writable, which applies the records its
// write-ahead log holds beyond the file, and closes it.
func applyLog(path string) error {
	st, err := store.Open(path, store.Options{LockTimeout: time.Second})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "mcpbroker: applied the write-ahead log of %s (the broker did not shut down cleanly)\n", path)
	return st.Close()
}

// openStore opens the data dir's store read-only, failing fast if a broker
// holds it; remoteErr is why its admin socket did not serve the request.
func openStore(dir string, remoteErr error) (*store.Store, error) {
	path := filepath.Join(dir, broker.DBFile)
	if !exists(path) {
		return nil, fmt.Errorf("no audit data in %s", dir)
	}
	st, err := store.Open(path, store.Options{ReadOnly: true, LockTimeout: time.Second})
	if errors.Is(err, store.ErrPendingLog) {
		// The broker stopped without closing the store: apply its
		// write-ahead log (as its next start would), then read.
		if err = applyLog(path); err == nil {
			st, err = store.Open(path, store.Options{ReadOnly: true, LockTimeout: time.Second})
		}
	}
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			if remoteErr == nil {
				remoteErr = errors.New("no admin socket")
			}
			return nil, fmt.Errorf("%s is held by a running broker, and its admin socket did not serve the request (%v): %w", path, remoteErr, err)
		}
		return nil, err
	}
	return st, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// verifyServed verifies, locally, the whole ledger the broker at sock
// exports.
func verifyServed(sock string, opts audit.VerifyOptions) (rep audit.Report, verr, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	pr, pw := io.Pipe()
	go func() {
		_, _, err := audit.ExportRemote(ctx, sock, pw, audit.ExportOptions{})
		pw.CloseWithError(err)
	}()
	opts.RequireSealed = true // the broker seals what it exports
	rep, verr = audit.VerifyJSONL(pr, opts)
	_ = pr.CloseWithError(errors.New("verification ended"))
	var ce *audit.ChainError
	if verr != nil && !errors.As(verr, &ce) {
		return rep, nil, fmt.Errorf("verify what the broker exports: %w", verr)
	}
	return rep, verr, nil
}

// orIn is path, or name in dir when path is empty.
func orIn(path, dir, name string) string {
	if path != "" {
		return path
	}
	return filepath.Join(dir, name)
}
