package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"bootstrap.lab/images/internal/kubeapi"
)

// fakeAPI serves fixed JSON per path and records PUTs.
type fakeAPI struct {
	mu      sync.Mutex
	objects map[string]string
	puts    map[string]map[string]any
	fail    bool
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if f.fail {
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"kind":"Status","reason":"InternalError","message":"etcd is down"}`)
		return
	}
	if r.Method == http.MethodPut {
		var obj map[string]any
		json.NewDecoder(r.Body).Decode(&obj)
		f.puts[r.URL.Path] = obj
		json.NewEncoder(w).Encode(obj)
		return
	}
	body, ok := f.objects[r.URL.Path]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"kind":"Status","reason":"NotFound","message":"%s not found"}`, r.URL.Path)
		return
	}
	io.WriteString(w, body)
}

func (f *fakeAPI) set(path, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects[path] = body
}

func (f *fakeAPI) setFail(fail bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fail
}

func (f *fakeAPI) putCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.puts)
}

const (
	ingressClassPath = "/apis/networking.k8s.io/v1/ingressclasses/nginx"
	ingressesPath    = "/apis/networking.k8s.io/v1/ingresses"
	servicesPath     = "/api/v1/services"
	slicesPath       = "/apis/discovery.k8s.io/v1/endpointslices"
	externalSvcPath  = "/api/v1/namespaces/nginx-ingress/services/nginx-ingress"
	statusPath       = "/apis/networking.k8s.io/v1/namespaces/crypto-exchange/ingresses/crypto-exchange-ingress/status"
)

const cryptoIngress = `{"metadata":{"name":"crypto-exchange-ingress","namespace":"crypto-exchange","resourceVersion":"41",
  "creationTimestamp":"2026-12-03T18:00:00Z","labels":{"app.kubernetes.io/part-of":"crypto-exchange"}},
  "spec":{"ingressClassName":"nginx","rules":[{"host":"crypto-exchange.local","http":{"paths":[
    {"path":"/","pathType":"Prefix","backend":{"service":{"name":"django-app-service","port":{"number":80}}}},
    {"path":"/foo","pathType":"Prefix","backend":{"service":{"name":"foo-service","port":{"name":"web"}}}}]}}]},
  "status":{"loadBalancer":{}}}`

const otherClassIngress = `{"metadata":{"name":"other","namespace":"crypto-exchange"},
  "spec":{"ingressClassName":"traefik","rules":[{"host":"other.local","http":{"paths":[
    {"path":"/","pathType":"Prefix","backend":{"service":{"name":"django-app-service","port":{"number":80}}}}]}}]}}`

const services = `{"items":[
  {"metadata":{"name":"django-app-service","namespace":"crypto-exchange"},
   "spec":{"type":"ClusterIP","ports":[{"name":"http","port":80,"targetPort":"http"}]}},
  {"metadata":{"name":"foo-service","namespace":"crypto-exchange"},
   "spec":{"ports":[{"name":"web","port":8080,"targetPort":8080}]}}]}`

// Two ready endpoints of django-app-service, one unready; foo-service's only endpoint is unready.
const endpointSlices = `{"items":[
  {"metadata":{"name":"django-app-service-abc","namespace":"crypto-exchange","labels":{"kubernetes.io/service-name":"django-app-service"}},
   "ports":[{"name":"http","port":8000,"protocol":"TCP"}],
   "endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":true}},
                {"addresses":["10.0.0.2"],"conditions":{}},
                {"addresses":["10.0.0.3"],"conditions":{"ready":false}}]},
  {"metadata":{"name":"foo-service-abc","namespace":"crypto-exchange","labels":{"kubernetes.io/service-name":"foo-service"}},
   "ports":[{"name":"web","port":8080}],
   "endpoints":[{"addresses":["10.0.0.9"],"conditions":{"ready":false}}]}]}`

const nodePortService = `{"metadata":{"name":"nginx-ingress","namespace":"nginx-ingress"},"spec":{"type":"NodePort"}}`

func newFakeAPI(t *testing.T) (*fakeAPI, *kubeapi.Client) {
	t.Helper()
	f := &fakeAPI{objects: map[string]string{}, puts: map[string]map[string]any{}}
	f.set(ingressClassPath, `{"metadata":{"name":"nginx"},"spec":{"controller":"nginx.org/ingress-controller"}}`)
	f.set("/api/v1/namespaces/nginx-ingress/configmaps/nginx-config", `{"metadata":{"name":"nginx-config"}}`)
	f.set(ingressesPath, `{"items":[`+cryptoIngress+`,`+otherClassIngress+`]}`)
	f.set(servicesPath, services)
	f.set(slicesPath, endpointSlices)
	f.set(externalSvcPath, nodePortService)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	client, err := kubeapi.New(kubeapi.Options{BaseURL: srv.URL, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return f, client
}

// backend is an app pod: it answers with its name and the headers the proxy set.
func backend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		fmt.Fprintf(w, "host=%s xff=%s realip=%s fhost=%s fport=%s fproto=%s",
			r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Real-IP"),
			r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Port"), r.Header.Get("X-Forwarded-Proto"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// dialVia maps the cluster addresses of the EndpointSlices to loopback servers: a slice port is
// one number for all its endpoints, and loopback servers cannot share one.
func dialVia(routes map[string]string) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		target, ok := routes[addr]
		if !ok {
			return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("no route to %s in the test", addr)}
		}
		return (&net.Dialer{}).DialContext(ctx, network, target)
	}
}

func connectTo(client api) func() (api, error) {
	return func() (api, error) { return client, nil }
}

func testOptions() options {
	return options{
		configMap: "nginx-ingress/nginx-config", reportStatus: true, externalService: "nginx-ingress",
		ingressClass: "nginx", logLevel: "info", podNamespace: "nginx-ingress", podName: "nginx-ingress-0",
	}
}

// started is a running stand-in on ephemeral ports.
type started struct {
	http, readiness string
	https           string
	stdout, stderr  *syncBuffer
	stop            func() error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func start(t *testing.T, opts options, client api, dial dialFunc) *started {
	t.Helper()
	s := &started{stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [3]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, opts, connectTo(client), s.stdout, s.stderr, dial, func(h, hs, r net.Addr) {
			addrs <- [3]string{loopback(h), loopback(hs), loopback(r)}
		})
	}()
	select {
	case a := <-addrs:
		s.http, s.https, s.readiness = a[0], a[1], a[2]
	case err := <-done:
		cancel()
		t.Fatalf("the stand-in did not start: %v", err)
	}
	s.stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { s.stop() })
	waitReady(t, s.readiness)
	return s
}

// loopback is an IPv4 loopback address of a wildcard listener, so clients are 127.0.0.1.
func loopback(addr net.Addr) string {
	return fmt.Sprintf("127.0.0.1:%d", addr.(*net.TCPAddr).Port)
}

func waitReady(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/nginx-ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
	t.Fatal("never ready")
}

func get(t *testing.T, addr, host, path string, headers map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	req.Host = host
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func testOptionsOnEphemeralPorts() options {
	o := testOptions()
	o.httpPort, o.httpsPort, o.readinessPort = 0, 0, 0
	return o
}

func TestProxyRoundRobinsOverReadyEndpointsWithNICHeaders(t *testing.T) {
	_, client := newFakeAPI(t)
	a, b := backend(t, "a"), backend(t, "b")
	s := start(t, testOptionsOnEphemeralPorts(), client, dialVia(map[string]string{
		"10.0.0.1:8000": a.Listener.Addr().String(),
		"10.0.0.2:8000": b.Listener.Addr().String(),
	}))
	hits := map[string]int{}
	var body string
	for range 4 {
		var resp *http.Response
		resp, body = get(t, s.http, "Crypto-Exchange.local:30080", "/trade", map[string]string{"X-Forwarded-For": "203.0.113.7"})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		hits[resp.Header.Get("X-Backend")]++
	}
	if hits["a"] != 2 || hits["b"] != 2 {
		t.Fatalf("round robin hits %v, want 2 each (the unready 10.0.0.3 never)", hits)
	}
	_, port, _ := net.SplitHostPort(s.http)
	want := "host=Crypto-Exchange.local:30080 xff=203.0.113.7, 127.0.0.1 realip=127.0.0.1 fhost=crypto-exchange.local fport=" + port + " fproto=http"
	if body != want {
		t.Fatalf("backend saw %q\nwant %q", body, want)
	}
	line := regexp.MustCompile(`(?m)^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /trade HTTP/1\.1" 200 \d+ "-" "Go-http-client/1\.1" "203\.0\.113\.7"$`)
	if !line.MatchString(s.stdout.String()) {
		t.Fatalf("access log:\n%s", s.stdout)
	}
	if !strings.Contains(s.stderr.String(), "bootstrap lab stand-in") {
		t.Fatalf("the start line does not say stand-in:\n%s", s.stderr)
	}
}

func TestUnknownHostIs404AndNoEndpointsIs502(t *testing.T) {
	_, client := newFakeAPI(t)
	s := start(t, testOptionsOnEphemeralPorts(), client, dialVia(nil))
	resp, body := get(t, s.http, "unknown.local", "/", nil)
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-Bootstrap-Lab") != "stand-in" ||
		!strings.Contains(body, "<title>404 Not Found</title>") || !strings.Contains(body, "<center>nginx</center>") {
		t.Fatalf("unknown host: %d %v\n%s", resp.StatusCode, resp.Header, body)
	}
	// The other IngressClass's host is not ours either.
	if resp, _ := get(t, s.http, "other.local", "/", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("an Ingress of another class is served: %d", resp.StatusCode)
	}
	// /foo goes to foo-service, whose only endpoint is not ready.
	resp, body = get(t, s.http, "crypto-exchange.local", "/foo/x", nil)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "502 Bad Gateway") || resp.Header.Get("X-Bootstrap-Lab") != "stand-in" {
		t.Fatalf("no endpoints: %d\n%s", resp.StatusCode, body)
	}
	// Ready endpoints that refuse connections: 502 too, after trying each.
	resp, _ = get(t, s.http, "crypto-exchange.local", "/", nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("unreachable endpoints: %d", resp.StatusCode)
	}
	if n := strings.Count(s.stderr.String(), "while connecting to upstream"); n != 2 {
		t.Fatalf("want both endpoints tried, log:\n%s", s.stderr)
	}
}

func TestAConnectErrorMovesToTheNextEndpoint(t *testing.T) {
	_, client := newFakeAPI(t)
	b := backend(t, "b")
	s := start(t, testOptionsOnEphemeralPorts(), client, dialVia(map[string]string{"10.0.0.2:8000": b.Listener.Addr().String()}))
	for range 3 {
		if resp, body := get(t, s.http, "crypto-exchange.local", "/", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
}

func TestReadinessIs503UntilTheFirstSyncAndTheLastTableSurvivesAPIErrors(t *testing.T) {
	f, client := newFakeAPI(t)
	logs := newLogger(io.Discard, levelInfo)
	ctrl := &controller{api: client, opts: testOptions(), proxy: newProxy(logs, io.Discard, "80", nil), logs: logs}
	ready := func() int {
		rec := httptest.NewRecorder()
		readinessHandler(ctrl).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/nginx-ready", nil))
		if rec.Header().Get("X-Bootstrap-Lab") != "stand-in" {
			t.Fatal("readiness answer without the stand-in header")
		}
		return rec.Code
	}
	f.setFail(true)
	ctrl.syncOnce(context.Background())
	if code := ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("ready before any sync succeeded: %d", code)
	}
	f.setFail(false)
	ctrl.syncOnce(context.Background())
	if code := ready(); code != http.StatusOK {
		t.Fatalf("not ready after a sync: %d", code)
	}
	f.setFail(true)
	ctrl.syncOnce(context.Background())
	if up := ctrl.proxy.table.Load().lookup("crypto-exchange.local", "/"); up == nil || len(up.addrs) != 2 {
		t.Fatalf("the last good table was dropped on an API error: %+v", up)
	}
}

func TestStartRefusesAMissingOrForeignIngressClass(t *testing.T) {
	f, client := newFakeAPI(t)
	f.set(ingressClassPath, `{"metadata":{"name":"nginx"},"spec":{"controller":"k8s.io/ingress-nginx"}}`)
	stderr := &syncBuffer{}
	err := serve(context.Background(), testOptionsOnEphemeralPorts(), connectTo(client), io.Discard, stderr, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "invalid Spec.Controller k8s.io/ingress-nginx; expected nginx.org/ingress-controller") {
		t.Fatalf("foreign controller: %v", err)
	}
	delete(f.objects, ingressClassPath)
	err = serve(context.Background(), testOptionsOnEphemeralPorts(), connectTo(client), io.Discard, stderr, nil, nil)
	if err == nil || err.Error() != "IngressClass with name nginx was not found" {
		t.Fatalf("missing class: %v", err)
	}
}

func TestAMissingConfigMapIsOnlyLogged(t *testing.T) {
	f, client := newFakeAPI(t)
	delete(f.objects, "/api/v1/namespaces/nginx-ingress/configmaps/nginx-config")
	s := start(t, testOptionsOnEphemeralPorts(), client, nil)
	if !strings.Contains(s.stderr.String(), "error when getting ConfigMap nginx-ingress/nginx-config") {
		t.Fatalf("log:\n%s", s.stderr)
	}
}

func TestPrefixAndExactSemantics(t *testing.T) {
	up := func(name string) *upstream { return &upstream{name: name, addrs: []string{"x:1"}} }
	table := &routeTable{hosts: map[string]routes{}, wildcards: map[string]routes{}}
	b := tableBuilder{table: table}
	b.add("h", "/", false, up("root"))
	b.add("h", normalisePath("/foo/", false), false, up("foo-prefix"))
	b.add("h", "/foo", true, up("foo-exact"))
	b.add("h", "/foo/bar", false, up("foobar-prefix"))
	b.add("*.wild.local", "/", false, up("wildcard"))
	b.add("", "/only-any", false, up("any"))
	b.finish()
	cases := map[string]string{
		"h /foo":           "foo-exact", // Exact beats Prefix of the same length
		"h /foo/":          "foo-prefix",
		"h /foo/baz":       "foo-prefix",
		"h /foobar":        "root", // not a path element of /foo
		"h /foo/bar/x":     "foobar-prefix",
		"H /foo/barx":      "foo-prefix",
		"a.wild.local /":   "wildcard",
		"a.b.wild.local /": "",
		"wild.local /":     "",
		"h /only-any/x":    "root", // the host's own rules first
		"x /only-any/x":    "any",
	}
	for c, want := range cases {
		host, path, _ := strings.Cut(c, " ")
		got := ""
		if u := table.lookup(strings.ToLower(host), path); u != nil {
			got = u.name
		}
		if got != want {
			t.Errorf("%s: got %q, want %q", c, got, want)
		}
	}
}

func TestStatusIsWrittenOnlyWhenTheExternalServiceHasAddresses(t *testing.T) {
	f, client := newFakeAPI(t)
	logs := newLogger(io.Discard, levelInfo)
	ctrl := &controller{api: client, opts: testOptions(), proxy: newProxy(logs, io.Discard, "80", nil), logs: logs}
	ctrl.syncOnce(context.Background())
	if n := f.putCount(); n != 0 {
		t.Fatalf("a NodePort Service without externalIPs wrote %d statuses", n)
	}
	f.set(externalSvcPath, `{"metadata":{"name":"nginx-ingress"},"spec":{"type":"NodePort","externalIPs":["192.0.2.10"]}}`)
	ctrl.syncOnce(context.Background())
	put, ok := f.puts[statusPath]
	if !ok || f.putCount() != 1 {
		t.Fatalf("puts %v", f.puts)
	}
	meta := put["metadata"].(map[string]any)
	status, _ := json.Marshal(put["status"])
	if put["kind"] != "Ingress" || meta["resourceVersion"] != "41" || string(status) != `{"loadBalancer":{"ingress":[{"ip":"192.0.2.10"}]}}` {
		t.Fatalf("put %v", put)
	}
	// Once the Ingress carries the address, nothing more is written.
	f.set(ingressesPath, `{"items":[`+strings.Replace(cryptoIngress, `"status":{"loadBalancer":{}}`,
		`"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10"}]}}`, 1)+`]}`)
	delete(f.puts, statusPath)
	ctrl.syncOnce(context.Background())
	if n := f.putCount(); n != 0 {
		t.Fatalf("an unchanged status was written again")
	}
}

func TestFlags(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "nginx-ingress")
	o, err := parseFlags([]string{"-nginx-configmaps=nginx-ingress/nginx-config", "-report-ingress-status", "-external-service=nginx-ingress"}, io.Discard)
	if err != nil || o.configMap != "nginx-ingress/nginx-config" || !o.reportStatus || o.externalService != "nginx-ingress" ||
		o.ingressClass != "nginx" || o.httpPort != 80 || o.httpsPort != 443 || o.readinessPort != 8081 {
		t.Fatalf("%+v %v", o, err)
	}
	if _, err := parseFlags([]string{"-enable-snippets"}, io.Discard); err == nil {
		t.Fatal("an unknown flag was accepted")
	}
	if _, err := parseFlags([]string{"-enable-prometheus-metrics"}, io.Discard); err == nil || !strings.Contains(err.Error(), "not modelled") {
		t.Fatalf("prometheus: %v", err)
	}
	if _, err := parseFlags([]string{"-nginx-configmaps=nginx-config"}, io.Discard); err == nil {
		t.Fatal("a ConfigMap without namespace was accepted")
	}
}

func TestHTTPSClosesConnectionsAndShutdownIsClean(t *testing.T) {
	_, client := newFakeAPI(t)
	s := start(t, testOptionsOnEphemeralPorts(), client, nil)
	conn, err := net.Dial("tcp", s.https)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); n != 0 || err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("the HTTPS port did not close the connection: %d %v", n, err)
	}
	conn.Close()
	if err := s.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if !strings.Contains(s.stderr.String(), "stopped") {
		t.Fatalf("log:\n%s", s.stderr)
	}
}
