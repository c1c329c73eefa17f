// Command nginx-ingress is the bootstrap lab's STAND-IN for the F5 NGINX Ingress Controller 5.5.4
// (image nginx/nginx-ingress:5.5.4, entrypoint /nginx-ingress). The real controller cannot be
// built here: the Go module proxy refuses github.com/nginx/kubernetes-ingress (403 "This module
// version is not available"). It models what the product's manifests and the lab's checks rely
// on: the flags of the pinned Deployment, the IngressClass check, Ingress routing to the ready
// endpoints of Services (polled every 2 s instead of watched), the readiness endpoint and the
// Ingress status from -external-service. It runs no nginx: the proxy is Go's.
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
	"strings"
	"sync"
	"syscall"
	"time"

	"bootstrap.lab/images/internal/kubeapi"
)

const (
	version      = "5.5.4"
	syncInterval = 2 * time.Second
	shutdownWait = 5 * time.Second
)

// options are NIC's flags the stand-in knows. Any other flag is refused by the flag package.
type options struct {
	configMap       string
	reportStatus    bool
	externalService string
	ingressClass    string
	watchNamespace  string
	logLevel        string
	prometheus      bool

	// Not NIC's: ports, so tests need no privileged ports.
	httpPort, httpsPort, readinessPort int

	podNamespace, podName string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("nginx-ingress", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.configMap, "nginx-configmaps", "", "namespace/name of the ConfigMap with NGINX settings")
	fs.BoolVar(&o.reportStatus, "report-ingress-status", false, "write the external Service's addresses into Ingress status")
	fs.StringVar(&o.externalService, "external-service", "", "Service (in the pod's namespace) whose addresses are reported")
	fs.StringVar(&o.ingressClass, "ingress-class", "nginx", "IngressClass handled")
	fs.StringVar(&o.watchNamespace, "watch-namespace", "", "comma-separated namespaces (default: all)")
	fs.Bool("health-status", false, "accepted; the stand-in has no /nginx-health location")
	fs.Int("v", 0, "accepted for compatibility; use -log-level")
	fs.StringVar(&o.logLevel, "log-level", "info", "trace, debug, info, warning, error or fatal")
	fs.BoolVar(&o.prometheus, "enable-prometheus-metrics", false, "not modelled by the stand-in")
	fs.IntVar(&o.httpPort, "standin-http-port", 80, "stand-in only: HTTP port")
	fs.IntVar(&o.httpsPort, "standin-https-port", 443, "stand-in only: HTTPS port")
	fs.IntVar(&o.readinessPort, "standin-readiness-port", 8081, "stand-in only: readiness port")
	if err := fs.Parse(args); err != nil {
		return o, usageError{err} // the flag package has printed it with the usage
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	o.podNamespace, o.podName = os.Getenv("POD_NAMESPACE"), os.Getenv("POD_NAME")
	return o, o.validate()
}

// usageError is a command line the flag package refused: exit 2, as its ExitOnError does.
type usageError struct{ error }

func (o options) validate() error {
	if o.prometheus {
		return errors.New("-enable-prometheus-metrics is not modelled by the stand-in")
	}
	if _, ok := levelNames[o.logLevel]; !ok {
		return fmt.Errorf("invalid log level %q: use trace, debug, info, warning, error or fatal", o.logLevel)
	}
	if o.configMap != "" {
		ns, name, ok := strings.Cut(o.configMap, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("invalid value for nginx-configmaps: %q: must be in the format namespace/name", o.configMap)
		}
	}
	if o.reportStatus && o.externalService != "" && o.podNamespace == "" {
		return errors.New("-report-ingress-status with -external-service needs POD_NAMESPACE")
	}
	return nil
}

func main() {
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	var usage usageError
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, &usage):
		os.Exit(2)
	}
	if err == nil {
		err = run(opts, inCluster, os.Stdout, os.Stderr, nil)
	}
	if err != nil {
		newLogger(os.Stderr, levelFatal).write(levelFatal, 'F', "%v", err)
		os.Exit(1)
	}
}

// inCluster connects with the pod's service account.
func inCluster() (api, error) { return kubeapi.InCluster() }

// run is the controller's life: start checks, servers, the sync loop, then SIGTERM/SIGQUIT.
func run(opts options, connect func() (api, error), stdout, stderr io.Writer, dial dialFunc) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGQUIT, os.Interrupt)
	defer stop()
	return serve(ctx, opts, connect, stdout, stderr, dial, nil)
}

// listening, when set, receives the addresses the servers listen on (tests).
type listening func(http, https, readiness net.Addr)

func serve(ctx context.Context, opts options, connect func() (api, error), stdout, stderr io.Writer, dial dialFunc, onListen listening) error {
	logs := newLogger(stderr, levelNames[opts.logLevel])
	logs.infof("Starting NGINX Ingress Controller Version=%s (bootstrap lab stand-in: not the F5 program) PlusFlag=false pod=%s/%s",
		version, opts.podNamespace, opts.podName)
	client, err := connect()
	if err != nil {
		return err
	}
	ln, err := listen(opts)
	if err != nil {
		return err
	}
	ctrl := &controller{api: client, opts: opts, proxy: newProxy(logs, stdout, portOf(ln.http.Addr()), dial), logs: logs}
	if err := ctrl.checkStart(ctx); err != nil {
		ln.close()
		return err
	}
	if onListen != nil {
		onListen(ln.http.Addr(), ln.https.Addr(), ln.readiness.Addr())
	}
	serveUntilDone(ctx, ctrl, ln)
	return nil
}

// serveUntilDone runs the servers and the sync loop until ctx ends, then shuts down.
func serveUntilDone(ctx context.Context, ctrl *controller, ln listeners) {
	servers := []*http.Server{
		{Handler: ctrl.proxy, ReadHeaderTimeout: 60 * time.Second},
		{Handler: readinessHandler(ctrl), ReadHeaderTimeout: 10 * time.Second},
	}
	var wg sync.WaitGroup
	wg.Go(func() { servers[0].Serve(ln.http) })
	wg.Go(func() { servers[1].Serve(ln.readiness) })
	wg.Go(func() { rejectTLS(ln.https) })
	wg.Go(func() { ctrl.run(ctx, syncInterval) })
	<-ctx.Done()
	ctrl.logs.infof("received a stop signal: shutting down (at most %s)", shutdownWait)
	shutdown(servers, ln.https)
	wg.Wait()
	ctrl.logs.infof("stopped")
}

// listeners are the controller's three ports.
type listeners struct {
	http, https, readiness net.Listener
}

func listen(opts options) (listeners, error) {
	var ln listeners
	var err error
	for _, l := range []struct {
		target *net.Listener
		port   int
	}{{&ln.http, opts.httpPort}, {&ln.https, opts.httpsPort}, {&ln.readiness, opts.readinessPort}} {
		if *l.target, err = net.Listen("tcp", ":"+strconv.Itoa(l.port)); err != nil {
			ln.close()
			return ln, err
		}
	}
	return ln, nil
}

func (ln listeners) close() {
	for _, l := range []net.Listener{ln.http, ln.https, ln.readiness} {
		if l != nil {
			l.Close()
		}
	}
}

func shutdown(servers []*http.Server, httpsLn net.Listener) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	httpsLn.Close()
	for _, s := range servers {
		if err := s.Shutdown(ctx); err != nil {
			s.Close() // the 5 s are up: cut the connections still open
		}
	}
}

// readinessHandler is NIC's readiness port: /nginx-ready answers 200 once the first sync has
// built a configuration, 503 before.
func readinessHandler(ctrl *controller) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /nginx-ready", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(standInHeader, "stand-in")
		w.Header().Set("Content-Type", "text/plain")
		if !ctrl.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready\n")
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(standInHeader, "stand-in")
		http.NotFound(w, r)
	})
	return mux
}

// rejectTLS holds the HTTPS port. NIC 5 without a default-server TLS Secret rejects every TLS
// handshake on its default server (ssl_reject_handshake), and the product's Ingress has no TLS:
// the stand-in closes each connection at once, which a client also sees as a failed handshake.
func rejectTLS(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return // closed at shutdown
		}
		conn.Close()
	}
}

func portOf(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return strconv.Itoa(tcp.Port)
	}
	return "80"
}
