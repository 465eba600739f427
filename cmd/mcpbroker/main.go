// Command mcpbroker is the MCP tool-call broker: an MCP server to agents and
// an MCP client to downstream servers, deciding every call with Cedar and
// recording it. This file is wiring only: flags, config, signals.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mcpbroker/mcpbroker/broker"
	"github.com/mcpbroker/mcpbroker/broker/metrics"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `mcpbroker: the MCP tool-call broker for AI agents

Usage:
  mcpbroker serve --demo [--data DIR] [--listen HOST:PORT] [--stdio]
  mcpbroker serve --config FILE [--data DIR] [--listen HOST:PORT] [--stdio]
  mcpbroker audit list|query|show|verify|export|hash|compact|pubkey ...  (mcpbroker audit help)
  mcpbroker task grant|list|show|revoke ...
  mcpbroker approvals list|show ID|approve ID|deny ID --comment TEXT|history ...
  mcpbroker tools list|diff|pin ...
  mcpbroker connect --url https://HOST:PORT/mcp [--broker-id SPIFFE-ID] [--token-file F | --token-env VAR] [--jwt-svid]
  mcpbroker sessions list|show|revoke ...  (mcpbroker sessions help)
  mcpbroker version
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "connect":
		return connect(args[1:], os.Stdin, stdout, stderr)
	case "sessions":
		return sessionsCmd(args[1:], stdout, stderr)
	case "tools":
		return toolsCmd(args[1:], stdout, stderr)
	case "task":
		return taskCmd(args[1:], stdout, stderr)
	case "approvals":
		return approvalsCmd(args[1:], stdout, stderr)
	case "audit":
		return auditCmd(args[1:], stdout, stderr)
	case "policy":
		return policyCmd(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "mcpbroker", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mcpbroker: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// logFormat is json (the default: one object per line, for collectors) or
// text (for people), set by --log-format.
var logFormat = "json"

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: l}
	if logFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func serve(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML configuration file")
	demo := fs.Bool("demo", false, "run the built-in demo: in-process demo servers, demo policies, no files needed")
	data := fs.String("data", "", "data directory (overrides data_dir)")
	listen := fs.String("listen", "", "HOST:PORT for streamable HTTP (overrides listen)")
	stdio := fs.Bool("stdio", false, "serve MCP on stdin/stdout instead of HTTP")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides log_level)")
	fs.StringVar(&logFormat, "log-format", "json", "json or text")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if logFormat != "json" && logFormat != "text" {
		fmt.Fprintln(stderr, "mcpbroker serve: --log-format is json or text")
		return 2
	}
	if *demo == (*cfgPath != "") {
		fmt.Fprintln(stderr, "mcpbroker serve: give exactly one of --demo or --config FILE")
		return 2
	}
	broker.TuneRuntime()
	var cfg broker.Config
	if *demo {
		cfg = broker.DemoConfig()
	} else {
		var err error
		if cfg, err = broker.LoadConfig(*cfgPath); err != nil {
			fmt.Fprintf(stderr, "mcpbroker: %v\n", err)
			return 1
		}
	}
	if *data != "" {
		cfg.DataDir = *data
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *logLevel != "" {
		cfg.LogLevel = *logLevel
	}
	// Logs always go to stderr: in --stdio mode stdout carries MCP.
	log := newLogger(stderr, cfg.LogLevel)
	// What libraries log through slog's default logger or the log package
	// (mcp-go's transports do) goes to the same place, in the same format.
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tcfg, err := metrics.TracingConfigFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintf(stderr, "mcpbroker: tracing: %v\n", err)
		return 1
	}
	tracer, err := metrics.NewTracer(ctx, tcfg, version)
	if err != nil {
		fmt.Fprintf(stderr, "mcpbroker: tracing: %v\n", err)
		return 1
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tracer.Shutdown(sctx)
	}()
	b, err := broker.New(cfg, broker.Options{
		Logger: log, Version: version, Stdio: *stdio, Tracer: tracer,
		Ready: func(url string) {
			if url != "" && *demo {
				printDemo(stderr, url)
			}
		},
	})
	if err != nil {
		fmt.Fprintf(stderr, "mcpbroker: %v\n", err)
		return 1
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if digest, err := b.ReloadPolicies(); err != nil {
				log.Error("policy reload on SIGHUP failed; the previous set stays in force", "digest", digest, "err", err)
			} else {
				log.Info("policy reload on SIGHUP", "digest", digest)
			}
		}
	}()
	if err := b.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "mcpbroker: %v\n", err)
		return 1
	}
	return 0
}

func printDemo(w io.Writer, url string) {
	fmt.Fprintf(w, `
mcpbroker demo is running. MCP endpoint: %[1]s

Register it with your agent:
  Claude Code:   claude mcp add --transport http mcpbroker %[1]s
  Cursor (.cursor/mcp.json):   {"mcpServers": {"mcpbroker": {"url": "%[1]s"}}}
  VS Code (.vscode/mcp.json):  {"servers": {"mcpbroker": {"type": "http", "url": "%[1]s"}}}

Demo tools: notes__read_note, notes__list_notes, notes__write_note, notes__delete_note (forbidden),
            payments__balance, payments__transfer (above 100.00 forbidden).
See every decision:  mcpbroker audit list --data <data dir>
Stop with Ctrl-C.

`, url)
}
