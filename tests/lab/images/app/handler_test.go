package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fakeStore answers FirstMessage with a fixed result and counts the calls.
type fakeStore struct {
	message string
	err     error
	calls   int
}

func (f *fakeStore) FirstMessage(ctx context.Context) (string, error) {
	f.calls++
	if _, ok := ctx.Deadline(); !ok {
		return "", errors.New("query without a deadline")
	}
	return f.message, f.err
}

func newTestApp(store greetingStore) (*app, *bytes.Buffer) {
	var out bytes.Buffer
	log := newRequestLog(&out)
	log.now = func() time.Time { return time.Date(2026, 12, 3, 18, 0, 0, 123_000_000, time.UTC) }
	return &app{
		store:   store,
		table:   "lab_greeting",
		release: "1",
		pod:     "django-app-xyz",
		metrics: newMetrics("1"),
		log:     log,
	}, &out
}

func get(h http.Handler, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

func TestGreetServesTheRow(t *testing.T) {
	a, _ := newTestApp(&fakeStore{message: "hello from postgres"})
	rec := get(a.routes(), "/")
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d", rec.Code)
	}
	if got, want := rec.Body.String(), "hello from postgres\nrelease=1 pod=django-app-xyz\n"; got != want {
		t.Fatalf("body = %q, want %q", got, want)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q", ct)
	}
	if !a.metrics.dbUp {
		t.Error("db_up not set after a successful query")
	}
}

func TestGreetDatabaseError(t *testing.T) {
	a, _ := newTestApp(&fakeStore{err: errors.New("dial tcp 10.0.0.1:5432: connection refused")})
	a.metrics.setDBUp(true)
	rec := get(a.routes(), "/")
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status = %d", rec.Code)
	}
	if got, want := rec.Body.String(), "database unavailable: dial tcp 10.0.0.1:5432: connection refused\n"; got != want {
		t.Fatalf("body = %q, want %q", got, want)
	}
	if a.metrics.dbUp {
		t.Error("db_up still 1 after a failed query")
	}
}

func TestGreetNoRow(t *testing.T) {
	a, _ := newTestApp(&fakeStore{err: errNoRow})
	rec := get(a.routes(), "/")
	if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != "no row in lab_greeting\n" {
		t.Fatalf("got %d %q", rec.Code, rec.Body.String())
	}
}

func TestRouting(t *testing.T) {
	store := &fakeStore{message: "hi"}
	a, _ := newTestApp(store)
	h := a.routes()

	if rec := get(h, "/?probe=x"); rec.Code != http.StatusOK || !strings.HasPrefix(rec.Body.String(), "hi\n") {
		t.Errorf("/?probe=x: %d %q", rec.Code, rec.Body.String())
	}
	if rec := get(h, "/x"); rec.Code != http.StatusNotFound {
		t.Errorf("/x: status %d, want 404", rec.Code)
	}
	callsBefore := store.calls
	if rec := get(h, "/healthz"); rec.Code != http.StatusOK || rec.Body.String() != "ok\n" {
		t.Errorf("/healthz: %d %q", rec.Code, rec.Body.String())
	}
	if store.calls != callsBefore {
		t.Error("/healthz asked the database")
	}
}

func TestOneJSONLinePerRequest(t *testing.T) {
	a, out := newTestApp(&fakeStore{message: "hi"})
	h := a.routes()
	get(h, "/?probe=abc")
	get(h, "/x")

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 log lines, got %d: %q", len(lines), out.String())
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("line 1 is not JSON: %v: %s", err, lines[0])
	}
	want := map[string]any{
		"time": "2026-12-03T18:00:00.123Z", "level": "info", "msg": "request", "method": "GET",
		"path": "/?probe=abc", "status": float64(200), "release": "1", "pod": "django-app-xyz",
	}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("line 1 %s = %#v, want %#v", k, first[k], v)
		}
	}
	if _, ok := first["duration_ms"].(float64); !ok {
		t.Errorf("line 1 has no numeric duration_ms: %s", lines[0])
	}
	var second requestEntry
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if second.Path != "/x" || second.Status != http.StatusNotFound {
		t.Errorf("line 2 path/status = %q/%d, want /x/404", second.Path, second.Status)
	}
}

func TestRequestsAreCounted(t *testing.T) {
	a, _ := newTestApp(&fakeStore{message: "hi"})
	h := a.routes()
	get(h, "/")
	get(h, "/healthz")
	get(h, "/nope")
	var b strings.Builder
	if err := a.metrics.writeTo(&b); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`crypto_exchange_lab_http_requests_total{code="200",method="GET"} 2`,
		`crypto_exchange_lab_http_requests_total{code="404",method="GET"} 1`,
		`crypto_exchange_lab_db_up 1`,
	} {
		if !strings.Contains(b.String(), line+"\n") {
			t.Errorf("metrics lack %q:\n%s", line, b.String())
		}
	}
}
