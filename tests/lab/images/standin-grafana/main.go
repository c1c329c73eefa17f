// Command standin-grafana is the test lab's labelled stand-in for Grafana 13.2.3, run under the
// image name docker.io/grafana/grafana:13.2.3 because real Grafana cannot be built here (the Go
// module proxy refuses github.com/grafana/grafana).
//
// It does what the product's manifests and the lab's checks rely on: the health endpoint the
// probes ask, basic auth for the admin from the grafana-admin Secret, the provisioned
// Prometheus data source (listed, proxied and queried through /api/ds/query) and the
// provisioned dashboards (search and by uid). Every answer carries `X-Bootstrap-Lab: stand-in`
// and the start log line says it is a stand-in. There is no UI.
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
	"strconv"
	"syscall"
	"time"
)

// shutdownTimeout bounds the graceful stop: Kubernetes sends SIGKILL 30 s after SIGTERM.
const shutdownTimeout = 5 * time.Second

// config is what Grafana would read from its environment (GF_<SECTION>_<KEY>).
type config struct {
	addr            string
	provisioningDir string
	adminUser       string
	adminPassword   string
}

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// loadConfig reads GF_* variables with Grafana's defaults; --provisioning overrides
// GF_PATHS_PROVISIONING (for tests and local runs).
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	cfg := config{
		provisioningDir: orDefault(getenv("GF_PATHS_PROVISIONING"), "/etc/grafana/provisioning"),
		adminUser:       orDefault(getenv("GF_SECURITY_ADMIN_USER"), "admin"),
		adminPassword:   orDefault(getenv("GF_SECURITY_ADMIN_PASSWORD"), "admin"),
	}
	port := orDefault(getenv("GF_SERVER_HTTP_PORT"), "3000")
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return cfg, fmt.Errorf("GF_SERVER_HTTP_PORT %q is not a port number", port)
	}
	cfg.addr = net.JoinHostPort(getenv("GF_SERVER_HTTP_ADDR"), port)
	// Anonymous access would let anyone read the dashboards in real Grafana; the stand-in
	// does not model it, so it refuses rather than quietly asking for a password anyway.
	if v, _ := strconv.ParseBool(getenv("GF_AUTH_ANONYMOUS_ENABLED")); v {
		return cfg, errors.New("GF_AUTH_ANONYMOUS_ENABLED=true is not modelled by this Grafana stand-in")
	}

	fs := flag.NewFlagSet("standin-grafana", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.provisioningDir, "provisioning", cfg.provisioningDir, "provisioning directory (overrides GF_PATHS_PROVISIONING)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return cfg, nil
}

func orDefault(v, fallback string) string {
	if v == "" {
		return fallback
	}
	return v
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := loadConfig(args, getenv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "standin-grafana:", err)
		return 1
	}
	log := newLogger(stdout)
	log.log("server", "info", "Starting Grafana", "version", grafanaVersion, "commit", grafanaCommit,
		"standin", "bootstrap-lab", "note", "bootstrap lab stand-in for Grafana, not the real Grafana; no UI")
	prov, err := loadProvisioning(cfg.provisioningDir)
	if err != nil {
		log.log("provisioning", "error", "Provisioning failed; the stand-in refuses to start", "error", err)
		fmt.Fprintln(stderr, "standin-grafana: provisioning:", err)
		return 1
	}
	log.log("provisioning", "info", "Provisioned", "datasources", len(prov.Datasources),
		"folders", len(prov.Folders), "dashboards", len(prov.Dashboards), "path", cfg.provisioningDir)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	srv := &http.Server{
		Addr:              cfg.addr,
		Handler:           newServer(prov, cfg.adminUser, cfg.adminPassword, log).handler(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	if err := serve(ctx, srv, log); err != nil {
		log.log("server", "error", "Server stopped on error", "error", err)
		return 1
	}
	log.log("server", "info", "Shutdown completed")
	return 0
}

// serve listens (a taken port fails at once), serves until ctx ends, then shuts down within
// shutdownTimeout.
func serve(ctx context.Context, srv *http.Server, log *logger) error {
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return err
	}
	log.log("http.server", "info", "HTTP Server Listen", "address", ln.Addr(), "protocol", "http")
	failed := make(chan error, 1)
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			failed <- err
		}
	}()
	select {
	case err := <-failed:
		return err
	case <-ctx.Done():
		log.log("server", "info", "Shutdown started", "reason", "signal")
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}
