// Command fluent-bit is the bootstrap lab's STAND-IN for Fluent Bit 5.1.1 (image
// fluent/fluent-bit:5.1.1, entrypoint /fluent-bit/bin/fluent-bit -c /fluent-bit/etc/fluent-bit.conf).
// Fluent Bit is C and its sources are on no registry the lab reaches. The stand-in reads the
// classic configuration the product renders (and refuses anything else), tails the containers'
// CRI logs, adds the kubernetes metadata, and ships the records to Elasticsearch's _bulk API as
// the es output does. Chunks stay in memory.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"bootstrap.lab/images/internal/kubeapi"
)

const (
	version      = "5.1.1"
	shutdownWait = 5 * time.Second // Fluent Bit's Grace default
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv))
}

// run is the whole program; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	configFile, done, err := parseArgs(args, stdout)
	if done {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "fluent-bit (bootstrap lab stand-in): %v\n", err)
		return 1
	}
	log := newFlbLogger(stderr, levelInfo)
	log.infof("fluent bit", "version=%s (bootstrap lab stand-in), commit=, pid=%d", version, os.Getpid())
	cfg, err := loadConfig(configFile, lookupEnv)
	if err != nil {
		log.errorf("config", "%v", err)
		return 1
	}
	log.setLevel(cfg.service.logLevel)
	p, err := newPipeline(cfg, log, lookupEnv)
	if err != nil {
		log.errorf("engine", "%v", err)
		return 1
	}
	return p.serve(ctx)
}

// parseArgs takes -c FILE, --config=FILE, --version and --help; any other option is refused.
func parseArgs(args []string, stdout io.Writer) (configFile string, done bool, err error) {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--version" || arg == "-V":
			fmt.Fprintf(stdout, "Fluent Bit v%s (bootstrap lab stand-in)\n", version)
			return "", true, nil
		case arg == "--help" || arg == "-h":
			fmt.Fprintln(stdout, "Usage: fluent-bit -c FILE | --config=FILE | --version (bootstrap lab stand-in)")
			return "", true, nil
		case arg == "-c" || arg == "--config":
			if i+1 >= len(args) {
				return "", false, fmt.Errorf("option %s needs a file", arg)
			}
			i++
			configFile = args[i]
		case strings.HasPrefix(arg, "--config="):
			configFile = strings.TrimPrefix(arg, "--config=")
		default:
			return "", false, fmt.Errorf("option %q is not modelled by the stand-in", arg)
		}
	}
	if configFile == "" {
		return "", false, errors.New("the stand-in needs -c FILE")
	}
	return configFile, false, nil
}

// pipeline is tail → kubernetes → es, plus the HTTP server.
type pipeline struct {
	cfg    *config
	log    *flbLogger
	tail   *tailInput
	filter *kubeFilter
	output *esOutput
	health *health
	server *http.Server
	ln     net.Listener
}

func newPipeline(cfg *config, log *flbLogger, lookupEnv func(string) (string, bool)) (*pipeline, error) {
	retry, err := retryFromEnv(cfg.output.retryLimit, lookupEnv)
	if err != nil {
		return nil, err
	}
	p := &pipeline{cfg: cfg, log: log, health: newHealth()}
	if p.output, err = newESOutput(*cfg.output, log, retry, p.health); err != nil {
		return nil, fmt.Errorf("[output:es:es.0] %w", err)
	}
	if cfg.filter != nil {
		api, err := kubeapi.New(kubeapi.Options{BaseURL: cfg.filter.kubeURL, TokenFile: cfg.filter.tokenFile,
			CAFile: cfg.filter.caFile, Timeout: podLookupTimeout})
		if err != nil {
			return nil, fmt.Errorf("[filter:kubernetes:kubernetes.0] %w", err)
		}
		p.filter = newKubeFilter(*cfg.filter, api, log)
	}
	p.tail = newTailInput(*cfg.input, log, p.emit)
	if cfg.service.httpServer {
		addr := net.JoinHostPort(cfg.service.httpListen, strconv.Itoa(cfg.service.httpPort))
		if p.ln, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("[http_server] %w", err)
		}
		p.server = &http.Server{Handler: monitorHandler(cfg.service.healthCheck, p.health), ReadHeaderTimeout: 10 * time.Second}
		log.infof("http_server", "listen iface=%s tcp_port=%d", cfg.service.httpListen, p.ln.Addr().(*net.TCPAddr).Port)
	}
	log.infof("storage", "stand-in: chunks are kept in memory only (storage.path and storage.type filesystem are not modelled)")
	return p, nil
}

// retryFromEnv: Fluent Bit's scheduler.base 5 s and scheduler.cap 2000 s, changed for tests by
// FLB_STANDIN_RETRY_BASE and FLB_STANDIN_RETRY_CAP (Go durations).
func retryFromEnv(limit int, lookupEnv func(string) (string, bool)) (retryPolicy, error) {
	p := retryPolicy{base: 5 * time.Second, cap: 2000 * time.Second, limit: limit}
	for name, target := range map[string]*time.Duration{"FLB_STANDIN_RETRY_BASE": &p.base, "FLB_STANDIN_RETRY_CAP": &p.cap} {
		if v, ok := lookupEnv(name); ok && v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return p, fmt.Errorf("%s=%q is not a duration", name, v)
			}
			*target = d
		}
	}
	return p, nil
}

// emit runs a record through the filter into the output, when their Match takes its tag.
func (p *pipeline) emit(rec record) {
	if p.filter != nil && !p.filter.apply(&rec) {
		return
	}
	if matchTag(p.cfg.output.match, rec.tag) {
		p.output.add(rec)
	}
}

// serve runs until ctx ends, then flushes once more within shutdownWait and saves the offsets.
func (p *pipeline) serve(ctx context.Context) int {
	runCtx, stopRun := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.tail.run(runCtx) })
	wg.Go(func() { p.output.run(runCtx, p.cfg.service.flush) })
	if p.server != nil {
		go p.server.Serve(p.ln) // stopped by Shutdown below
	}
	<-ctx.Done()
	p.log.infof(scopeEngine, "caught signal (SIGTERM)")
	stopRun()
	wg.Wait() // the tail input has read what was left and saved its offsets
	final, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	p.output.flush(final, true)
	if p.server != nil {
		p.server.Shutdown(final)
	}
	if n := p.output.pending(); n > 0 {
		p.log.warnf(scopeEngine, "service will shutdown with %d chunks not sent (kept in memory only: lost)", n)
	}
	p.log.infof(scopeEngine, "service has stopped (0 pending tasks)")
	return 0
}
