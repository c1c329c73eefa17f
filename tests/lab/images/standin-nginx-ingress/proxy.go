package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// standInHeader marks every answer the stand-in writes itself (not the backends' answers).
const standInHeader = "X-Bootstrap-Lab"

// dialFunc opens a connection to a backend; tests replace it to reach loopback servers.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// proxy is the :80 server: NIC's generated nginx.conf for the Ingresses, in Go.
type proxy struct {
	table      atomic.Pointer[routeTable]
	counters   sync.Map // upstream name → *atomic.Uint64, kept across table swaps
	reverse    *httputil.ReverseProxy
	serverPort string // $server_port for X-Forwarded-Port
	logs       *logger
	accessMu   sync.Mutex
	accessLog  io.Writer
	now        func() time.Time
}

type upstreamKey struct{}

func newProxy(logs *logger, accessLog io.Writer, serverPort string, dial dialFunc) *proxy {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 60 * time.Second}).DialContext // proxy_connect_timeout 60s
	}
	p := &proxy{logs: logs, accessLog: accessLog, serverPort: serverPort, now: time.Now}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.Proxy = nil
	base.DialContext = dial
	p.reverse = &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		Transport:    &endpointTransport{base: base, proxy: p},
		ErrorHandler: p.upstreamError,
	}
	return p
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &recordingWriter{ResponseWriter: w}
	defer p.logAccess(r, rec)
	up := p.table.Load().lookup(hostOnly(r.Host), r.URL.Path)
	switch {
	case up == nil:
		// NIC's default server: no Ingress claims this host and path.
		writeErrorPage(rec, http.StatusNotFound)
	case len(up.addrs) == 0:
		writeErrorPage(rec, http.StatusBadGateway)
	default:
		p.reverse.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), upstreamKey{}, up)))
	}
}

// rewrite sets the headers of NIC's default template (proxy_set_header ...); Host passes unchanged.
func (p *proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = "upstream.invalid" // endpointTransport puts the endpoint here
	pr.Out.Host = pr.In.Host
	remote := remoteIP(pr.In)
	forwardedFor := remote
	if prior := pr.In.Header.Get("X-Forwarded-For"); prior != "" {
		forwardedFor = prior + ", " + remote // $proxy_add_x_forwarded_for
	}
	pr.Out.Header.Set("X-Real-IP", remote)
	pr.Out.Header.Set("X-Forwarded-For", forwardedFor)
	pr.Out.Header.Set("X-Forwarded-Host", hostOnly(pr.In.Host))
	pr.Out.Header.Set("X-Forwarded-Port", p.serverPort)
	pr.Out.Header.Set("X-Forwarded-Proto", "http")
}

func (p *proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	up, _ := r.Context().Value(upstreamKey{}).(*upstream)
	name := ""
	if up != nil {
		name = up.name
	}
	p.logs.errorf("upstream %s: %v while proxying %q for host %q", name, err, r.URL.Path, r.Host)
	writeErrorPage(w, http.StatusBadGateway)
}

// nextIndex is the round-robin position of an upstream (nginx's default balancing).
func (p *proxy) nextIndex(up *upstream) int {
	c, _ := p.counters.LoadOrStore(up.name, new(atomic.Uint64))
	return int((c.(*atomic.Uint64).Add(1) - 1) % uint64(len(up.addrs)))
}

// endpointTransport picks the endpoint for each request. Like nginx's proxy_next_upstream
// "error", a request that could not connect goes to the next endpoint; only when it has no body
// (nginx buffers bodies, this stand-in does not, and a sent body cannot be sent again).
type endpointTransport struct {
	base  http.RoundTripper
	proxy *proxy
}

func (t *endpointTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	up := req.Context().Value(upstreamKey{}).(*upstream)
	start := t.proxy.nextIndex(up)
	tries := 1
	if req.Body == nil || req.Body == http.NoBody {
		tries = len(up.addrs)
	}
	var err error
	for i := range tries {
		attempt := req.Clone(req.Context())
		attempt.URL.Host = up.addrs[(start+i)%len(up.addrs)]
		var resp *http.Response
		if resp, err = t.base.RoundTrip(attempt); err == nil || !isConnectError(err) {
			return resp, err
		}
		t.proxy.logs.errorf("connect() to %s failed (%v) while connecting to upstream %s", attempt.URL.Host, err, up.name)
	}
	return nil, err
}

func isConnectError(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

// writeErrorPage answers as nginx's built-in error pages do, marked as the stand-in's own answer.
func writeErrorPage(w http.ResponseWriter, code int) {
	title := fmt.Sprintf("%d %s", code, http.StatusText(code))
	w.Header().Set("Content-Type", "text/html")
	w.Header().Set(standInHeader, "stand-in")
	w.WriteHeader(code)
	fmt.Fprintf(w, "<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n<center><h1>%s</h1></center>\r\n"+
		"<hr><center>nginx</center>\r\n<!-- bootstrap lab stand-in of the F5 NGINX Ingress Controller -->\r\n</body>\r\n</html>\r\n",
		title, title)
}

// recordingWriter keeps the status and body size for the access log.
type recordingWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *recordingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController (used by ReverseProxy to flush) reach the real writer.
func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logAccess writes nginx's "main" log format, which NIC's default template uses:
// $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
// "$http_referer" "$http_user_agent" "$http_x_forwarded_for"
func (p *proxy) logAccess(r *http.Request, rec *recordingWriter) {
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	line := fmt.Sprintf("%s - - [%s] \"%s %s %s\" %d %d \"%s\" \"%s\" \"%s\"\n",
		remoteIP(r), p.now().Format("02/Jan/2006:15:04:05 -0700"), r.Method, r.RequestURI, r.Proto,
		status, rec.bytes, orDash(r.Referer()), orDash(r.UserAgent()), orDash(r.Header.Get("X-Forwarded-For")))
	p.accessMu.Lock()
	defer p.accessMu.Unlock()
	io.WriteString(p.accessLog, line)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// hostOnly is nginx's $host: the Host header without its port, lower case.
func hostOnly(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

func remoteIP(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}
