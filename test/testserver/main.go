// Command testserver is a downstream MCP server for mcpbroker's end-to-end
// tests. The tests launch it as a real process and point the broker at it,
// either over stdio or over streamable HTTP:
//
//	testserver -stdio [-name NAME]
//	testserver -listen 127.0.0.1:0 [-name NAME]
//
// With -listen it prints exactly one line, "LISTENING http://HOST:PORT/mcp",
// to stdout once the socket accepts connections, then serves until SIGTERM or
// SIGINT and exits 0. With -stdio it serves JSON-RPC on stdin/stdout until
// stdin closes or a signal arrives; stdout carries nothing else. Diagnostics
// go to stderr.
//
// If the environment variable TESTSERVER_EVENTS names a file, one line per
// event is appended to it so a test can observe what reached the downstream:
//
//	started name=NAME transport=stdio|http pid=PID
//	call TOOL REQUEST-ID
//	progress REQUEST-ID STEP/STEPS  (progress-failed ... ERR if mcp-go refused to send it)
//	cancelled REQUEST-ID          (slow or hang saw its ctx end; REQUEST-ID is the downstream JSON-RPC id)
//	crash REQUEST-ID              (just before exiting with status 3)
//	stopped name=NAME
//
// The tools, resources and prompts are described in server.go. This program
// is test infrastructure: it trusts its caller and never imports broker code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mark3labs/mcp-go/server"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		stdio  = flag.Bool("stdio", false, "serve MCP over stdin/stdout")
		listen = flag.String("listen", "", "serve MCP over streamable HTTP on this address (e.g. 127.0.0.1:0)")
		name   = flag.String("name", "testserver", "server name reported in serverInfo")
	)
	flag.Parse()
	if *stdio == (*listen != "") {
		fmt.Fprintln(os.Stderr, "testserver: exactly one of -stdio or -listen is required")
		flag.Usage()
		return 2
	}

	events, err := openEvents(os.Getenv("TESTSERVER_EVENTS"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "testserver: %v\n", err)
		return 1
	}
	defer events.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	s := newServer(*name, events)
	if *stdio {
		err = serveStdio(ctx, s, *name, events)
	} else {
		err = serveHTTP(ctx, s, *listen, *name, events)
	}
	events.Log("stopped name=%s", *name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testserver: %v\n", err)
		return 1
	}
	return 0
}

// serveStdio serves until stdin reaches EOF or ctx is cancelled.
func serveStdio(ctx context.Context, s *server.MCPServer, name string, events *eventLog) error {
	ss := server.NewStdioServer(s)
	ss.SetErrorLogger(log.New(os.Stderr, "testserver: ", log.LstdFlags))
	// Room for many concurrent slow/hang calls: the default pool of 5
	// workers would queue the sixth call and hide cancellations.
	server.WithWorkerPoolSize(64)(ss)
	events.Log("started name=%s transport=stdio pid=%d", name, os.Getpid())
	err := ss.Listen(ctx, os.Stdin, os.Stdout)
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("stdio: %w", err)
}

// serveHTTP listens on addr, announces the URL, and serves streamable HTTP at
// /mcp until ctx is cancelled, then cancels in-flight
// requests and shuts down within five seconds.
func serveHTTP(ctx context.Context, s *server.MCPServer, addr, name string, events *eventLog) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	mcpHandler := server.NewStreamableHTTPServer(s,
		server.WithStreamableHTTPLogger(logger),
		// Works around the dropped final notification on legacy sessions
		// (mcp-go notes §6, mark3labs/mcp-go#969).
		server.WithEventStore(server.NewInMemoryEventStore()),
		server.WithSessionIdleTTL(10*time.Minute),
	)
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcpHandler)
	// Every request context derives from baseCtx, so cancelling it on
	// shutdown ends in-flight handlers (hang, slow) instead of waiting them out.
	baseCtx, cancelRequests := context.WithCancel(context.Background())
	defer cancelRequests()
	srv := &http.Server{
		Handler:           mux,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(os.Stderr, "testserver http: ", log.LstdFlags),
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	events.Log("started name=%s transport=http pid=%d", name, os.Getpid())
	fmt.Fprintf(os.Stdout, "LISTENING http://%s/mcp\n", ln.Addr().String())

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cancelRequests()
	_ = mcpHandler.Shutdown(shutdownCtx)
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
