package main

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"bootstrap.lab/images/internal/testtls"
)

// quietTLSServer is httptest.NewTLSServer without the log lines of the handshakes the tests
// make fail on purpose.
func quietTLSServer(h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	return srv
}

// fakeES answers _bulk with scripted answers (then 200 without errors) and keeps the requests.
type fakeES struct {
	mu       sync.Mutex
	answers  []esAnswer
	requests []esRequest
}

type esAnswer struct {
	status int
	body   string
}

type esRequest struct {
	path, contentType, user, password string
	body                              string
}

func (f *fakeES) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	user, password, _ := r.BasicAuth()
	f.mu.Lock()
	f.requests = append(f.requests, esRequest{r.URL.Path, r.Header.Get("Content-Type"), user, password, string(body)})
	answer := esAnswer{http.StatusOK, `{"took":1,"errors":false,"items":[]}`}
	if len(f.answers) > 0 {
		answer, f.answers = f.answers[0], f.answers[1:]
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(answer.status)
	io.WriteString(w, answer.body)
}

func (f *fakeES) sent() []esRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]esRequest(nil), f.requests...)
}

func esConfigFor(t *testing.T, srv *httptest.Server) esConfig {
	t.Helper()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	return esConfig{match: "kube.*", host: host, port: p, user: "fluent-bit", password: "pw", index: "k8s-containers",
		suppressTypeName: true, replaceDots: true, traceError: true, retryLimit: 30}
}

func newTestOutput(t *testing.T, cfg esConfig, retry retryPolicy) (*esOutput, *syncLog) {
	t.Helper()
	logs := &syncLog{}
	o, err := newESOutput(cfg, newFlbLogger(logs, levelDebug), retry, newHealth())
	if err != nil {
		t.Fatal(err)
	}
	return o, logs
}

type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var testTime = time.Date(2026, 12, 3, 18, 0, 0, 123456789, time.UTC)

func sampleRecord() record {
	return record{tag: "kube.x", time: testTime, body: object{
		{"stream", "stdout"}, {"log", "a.b <c> & d"},
		{"kubernetes", object{{"pod_name", "p"}, {"labels", object{{"app.kubernetes.io/name", "django"}}}}},
		{"list", []any{object{{"x.y", "v.w"}}}},
	}}
}

func TestBulkBodyExactly(t *testing.T) {
	o, _ := newTestOutput(t, esConfig{index: "k8s-containers", suppressTypeName: true, replaceDots: true}, retryPolicy{})
	want := `{"create":{"_index":"k8s-containers"}}` + "\n" +
		`{"@timestamp":"2026-12-03T18:00:00.123Z","stream":"stdout","log":"a.b <c> & d",` +
		`"kubernetes":{"pod_name":"p","labels":{"app_kubernetes_io/name":"django"}},"list":[{"x_y":"v.w"}]}` + "\n"
	if got := string(o.document(sampleRecord())); got != want {
		t.Fatalf("document\n%s\nwant\n%s", got, want)
	}
	o.cfg.suppressTypeName, o.cfg.replaceDots = false, false
	got := string(o.document(sampleRecord()))
	if !strings.HasPrefix(got, `{"create":{"_index":"k8s-containers","_type":"_doc"}}`) || !strings.Contains(got, `"app.kubernetes.io/name"`) {
		t.Fatalf("without Suppress_Type_Name and Replace_Dots: %s", got)
	}
}

func TestSendsOverVerifiedTLSWithBasicAuth(t *testing.T) {
	es := &fakeES{}
	srv := httptest.NewTLSServer(es)
	defer srv.Close()
	cfg := esConfigFor(t, srv)
	cfg.tls, cfg.tlsVerify, cfg.tlsVerifyHost = true, true, true
	cfg.caFile = testtls.WriteFile(t, "ca.crt", testtls.CertPEM(srv))
	o, logs := newTestOutput(t, cfg, retryPolicy{base: time.Hour, cap: time.Hour, limit: 1})
	o.add(sampleRecord())
	o.flush(context.Background(), false)
	reqs := es.sent()
	if len(reqs) != 1 || reqs[0].path != "/_bulk" || reqs[0].contentType != "application/x-ndjson" ||
		reqs[0].user != "fluent-bit" || reqs[0].password != "pw" || !strings.HasPrefix(reqs[0].body, `{"create":{"_index":"k8s-containers"}}`) {
		t.Fatalf("requests %+v\n%s", reqs, logs)
	}
	if o.pending() != 0 || !strings.Contains(logs.String(), "[debug] [output:es:es.0] HTTP Status=200 URI=/_bulk") {
		t.Fatalf("pending %d\n%s", o.pending(), logs)
	}
}

func TestTLSRefusesAnotherCAAndAWrongName(t *testing.T) {
	es := &fakeES{}
	srv := quietTLSServer(es)
	defer srv.Close()
	attempt := func(caPEM, host string, verifyHost bool) (int, string) {
		cfg := esConfigFor(t, srv)
		cfg.tls, cfg.tlsVerify, cfg.tlsVerifyHost, cfg.host = true, true, verifyHost, host
		cfg.caFile = testtls.WriteFile(t, "ca.crt", caPEM)
		before := len(es.sent())
		o, logs := newTestOutput(t, cfg, retryPolicy{base: time.Hour, cap: time.Hour, limit: 1})
		o.add(sampleRecord())
		o.flush(context.Background(), false)
		return len(es.sent()) - before, logs.String()
	}
	if n, logs := attempt(testtls.OtherCA(t), "127.0.0.1", true); n != 0 || !strings.Contains(logs, "certificate signed by unknown authority") {
		t.Fatalf("another CA: %d requests\n%s", n, logs)
	}
	// httptest's certificate names 127.0.0.1, ::1 and example.com, not localhost.
	if n, logs := attempt(testtls.CertPEM(srv), "localhost", true); n != 0 || !strings.Contains(logs, "localhost") {
		t.Fatalf("wrong name with tls.verify_hostname On: %d\n%s", n, logs)
	}
	if n, logs := attempt(testtls.CertPEM(srv), "localhost", false); n != 1 {
		t.Fatalf("tls.verify_hostname Off checks the chain only: %d\n%s", n, logs)
	}
	if n, _ := attempt(testtls.OtherCA(t), "localhost", false); n != 0 {
		t.Fatal("tls.verify_hostname Off accepted another CA")
	}
}

// flushUntil flushes until cond holds or 5 s pass.
func flushUntil(t *testing.T, o *esOutput, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		o.flush(context.Background(), false)
	}
}

func TestRetriesOn500ThenSucceeds(t *testing.T) {
	es := &fakeES{answers: []esAnswer{{500, `{"error":"boom"}`}, {503, `unavailable`}}}
	srv := httptest.NewServer(es)
	defer srv.Close()
	o, logs := newTestOutput(t, esConfigFor(t, srv), retryPolicy{base: 20 * time.Millisecond, cap: 40 * time.Millisecond, limit: 30})
	o.add(sampleRecord())
	start := time.Now()
	flushUntil(t, o, func() bool { return o.pending() == 0 })
	reqs := es.sent()
	if len(reqs) != 3 || reqs[0].body != reqs[2].body {
		t.Fatalf("%d requests, want the same chunk 3 times", len(reqs))
	}
	if elapsed := time.Since(start); elapsed < 60*time.Millisecond {
		t.Fatalf("retried after %s, want the 20 ms + 40 ms backoff", elapsed)
	}
	for _, want := range []string{"[error] [output:es:es.0] HTTP status=500 URI=/_bulk, response:\n{\"error\":\"boom\"}",
		"retry in 20ms: task_id=0, input=tail.0 > output=es.0", "retry in 40ms", "succeeded at retry 2"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestAChunkIsDroppedAfterRetryLimit(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer srv.Close()
	o, logs := newTestOutput(t, esConfigFor(t, srv), retryPolicy{base: time.Millisecond, cap: time.Millisecond, limit: 2})
	o.add(sampleRecord())
	flushUntil(t, o, func() bool { return o.pending() == 0 })
	if n := strings.Count(logs.String(), "HTTP status=500"); n != 3 {
		t.Fatalf("%d attempts, want 1 + 2 retries\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "[error] [engine] chunk '") || !strings.Contains(logs.String(), "' cannot be retried: task_id=0, input=tail.0 > output=es.0\n") {
		t.Fatalf("log:\n%s", logs)
	}
}

func TestAConnectionFailureIsRetried(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	o, logs := newTestOutput(t, esConfig{host: "127.0.0.1", port: port, index: "i", retryLimit: 5}, retryPolicy{base: time.Hour, cap: time.Hour, limit: 5})
	o.add(sampleRecord())
	o.flush(context.Background(), false)
	if o.pending() != 1 || !strings.Contains(logs.String(), "no upstream connections available to 127.0.0.1:") ||
		!strings.Contains(logs.String(), "retry in 1h0m0s") {
		t.Fatalf("pending %d\n%s", o.pending(), logs)
	}
}

func TestRefusedDocumentsAreLoggedAndNotRetried(t *testing.T) {
	answer := `{"took":3,"errors":true,"items":[
	  {"create":{"_index":"k8s-containers","status":201}},
	  {"create":{"_index":"k8s-containers","status":400,"error":{"type":"document_parsing_exception","reason":"[1:2] failed to parse field [n]"}}}]}`
	es := &fakeES{answers: []esAnswer{{200, answer}}}
	srv := httptest.NewServer(es)
	defer srv.Close()
	o, logs := newTestOutput(t, esConfigFor(t, srv), retryPolicy{base: time.Millisecond, cap: time.Millisecond, limit: 30})
	o.add(sampleRecord())
	bad := sampleRecord()
	bad.body = object{{"n", "not a number"}}
	o.add(bad)
	for range 5 {
		o.flush(context.Background(), false)
		time.Sleep(2 * time.Millisecond)
	}
	if n := len(es.sent()); n != 1 || o.pending() != 0 {
		t.Fatalf("%d requests, %d pending: a chunk with refused documents was resent", n, o.pending())
	}
	want := `[error] [output:es:es.0] error: Output: status=400 type=document_parsing_exception reason="[1:2] failed to parse field [n]" ` +
		`document={"@timestamp":"2026-12-03T18:00:00.123Z","n":"not a number"}`
	if !strings.Contains(logs.String(), want) || strings.Count(logs.String(), "error: Output") != 1 {
		t.Fatalf("log:\n%s", logs)
	}
}

func TestTotalLimitDropsTheOldestChunk(t *testing.T) {
	o, logs := newTestOutput(t, esConfig{index: "i", totalLimit: 600}, retryPolicy{})
	for i := range 3 {
		o.add(sampleRecord()) // about 250 bytes each
		o.mu.Lock()
		o.seal() // each in its own chunk, as three flushes with Elasticsearch away would
		o.mu.Unlock()
		_ = i
	}
	if len(o.queue) != 2 || !strings.Contains(logs.String(), "[ warn] [engine] chunk '") || !strings.Contains(logs.String(), "dropped: storage.total_limit_size 600 bytes reached, 1 records lost") {
		t.Fatalf("%d chunks\n%s", len(o.queue), logs)
	}
	if o.queue[0].taskID != 1 {
		t.Fatalf("kept task %d first, want the oldest dropped", o.queue[0].taskID)
	}
}

func TestHealthTurnsToErrorAfterMoreThanFiveErrors(t *testing.T) {
	h := newHealth()
	now := time.Now()
	h.now = func() time.Time { return now }
	srv := httptest.NewServer(monitorHandler(true, h))
	defer srv.Close()
	check := func(want int, wantBody string) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/api/v1/health")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || strings.TrimSpace(string(body)) != wantBody || resp.Header.Get("X-Bootstrap-Lab") != "stand-in" {
			t.Fatalf("health %d %q", resp.StatusCode, body)
		}
	}
	for range 5 {
		h.outputError()
	}
	check(200, "ok")
	h.outputError()
	check(500, "error")
	now = now.Add(61 * time.Second)
	check(200, "ok")
	for range 6 {
		h.retryFailed()
	}
	check(500, "error")

	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct {
		FluentBit struct {
			Version, Edition string
			Flags            []string
		} `json:"fluent-bit"`
		Lab string `json:"bootstrap-lab"`
	}
	json.NewDecoder(resp.Body).Decode(&info)
	if info.FluentBit.Version != "5.1.1" || info.FluentBit.Edition != "Community" || info.Lab != "stand-in" {
		t.Fatalf("/ answered %+v", info)
	}
}

func TestRetryWaitDoublesUpToTheCap(t *testing.T) {
	p := retryPolicy{base: 5 * time.Second, cap: 30 * time.Second}
	var got []time.Duration
	for i := 1; i <= 5; i++ {
		got = append(got, p.wait(i))
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 30 * time.Second, 30 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v", got, want)
		}
	}
}
