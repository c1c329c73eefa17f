// Command app is the test lab's stand-in for the crypto-exchange Django app: a small HTTP
// service that reads the same environment as the Django app, asks the same PostgreSQL for one
// row, logs one JSON line per request and serves Prometheus metrics on a second port. Two
// images of it (--release 1 and 2) let the lab exercise `kubectl set image`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// shutdownTimeout bounds the graceful stop: Kubernetes sends SIGKILL 30 s after SIGTERM.
const shutdownTimeout = 5 * time.Second

type options struct {
	release       string
	listen        string
	metricsListen string
	table         string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("app", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.release, "release", "", "release this image is (required; the lab builds 1 and 2)")
	fs.StringVar(&o.listen, "listen", ":8000", "address of the app port")
	fs.StringVar(&o.metricsListen, "metrics-listen", ":8001", "address of the metrics port")
	fs.StringVar(&o.table, "table", "lab_greeting", "table whose first message / answers")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.release == "" {
		return o, errors.New("--release is required")
	}
	return o, validateTable(o.table)
}

func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseOptions(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "app:", err)
		return 1
	}
	settings, err := loadSettings(os.LookupEnv)
	if err != nil {
		fmt.Fprintln(stderr, "app:", err)
		return 1
	}
	store, err := openStore(settings, opts.table)
	if err != nil {
		// lib/pq's parse errors name the key, not the password; the DSN itself is never printed.
		fmt.Fprintln(stderr, "app: database settings:", err)
		return 1
	}
	defer store.Close()

	log := newRequestLog(stdout)
	m := newMetrics(opts.release)
	a := &app{store: store, table: opts.table, release: opts.release, pod: podName(), metrics: m, log: log}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log.event("info", eventEntry{Msg: "starting", Release: a.release, Pod: a.pod,
		Listen: opts.listen, Metrics: opts.metricsListen, Table: opts.table})
	if err := serve(ctx, log, newServer(opts.listen, a.routes()), newServer(opts.metricsListen, m.handler())); err != nil {
		log.event("error", eventEntry{Msg: "stopped on error", Error: err.Error()})
		return 1
	}
	log.event("info", eventEntry{Msg: "stopped"})
	return 0
}

// podName is the hostname, which Kubernetes sets to the pod's name.
func podName() string {
	name, err := os.Hostname()
	if err != nil || name == "" {
		return "unknown"
	}
	return name
}

func newServer(addr string, h http.Handler) *http.Server {
	return &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
}

// serve listens on both addresses first (a taken port fails the start at once), then serves
// until ctx ends (SIGTERM/SIGINT) or one server fails, and shuts both down within
// shutdownTimeout.
func serve(ctx context.Context, log *requestLog, servers ...*http.Server) error {
	listeners := make([]net.Listener, 0, len(servers))
	for _, s := range servers {
		ln, err := net.Listen("tcp", s.Addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return err
		}
		listeners = append(listeners, ln)
	}
	failed := make(chan error, len(servers))
	for i, s := range servers {
		go func() {
			if err := s.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				failed <- err
			}
		}()
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.event("info", eventEntry{Msg: "signal received, shutting down"})
	case runErr = <-failed:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(shutdownCtx); err != nil && runErr == nil {
			runErr = fmt.Errorf("shutdown %s: %w", s.Addr, err)
		}
	}
	return runErr
}
