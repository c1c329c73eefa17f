package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestMetricsTextForKnownState(t *testing.T) {
	m := newMetrics("2")
	m.countRequest(503, "GET")
	m.countRequest(200, "POST")
	m.countRequest(200, "GET")
	m.countRequest(200, "GET")
	m.countRequest(200, "BREW") // made-up methods share one label value

	var b strings.Builder
	if err := m.writeTo(&b); err != nil {
		t.Fatal(err)
	}
	want := `# HELP crypto_exchange_lab_http_requests_total HTTP requests answered on the app port, by status code and method.
# TYPE crypto_exchange_lab_http_requests_total counter
crypto_exchange_lab_http_requests_total{code="200",method="GET"} 2
crypto_exchange_lab_http_requests_total{code="200",method="OTHER"} 1
crypto_exchange_lab_http_requests_total{code="200",method="POST"} 1
crypto_exchange_lab_http_requests_total{code="503",method="GET"} 1
# HELP crypto_exchange_lab_db_up Whether the last database query succeeded (1) or not (0).
# TYPE crypto_exchange_lab_db_up gauge
crypto_exchange_lab_db_up 0
# HELP crypto_exchange_lab_info The release of the lab app this pod runs.
# TYPE crypto_exchange_lab_info gauge
crypto_exchange_lab_info{release="2"} 1
`
	if b.String() != want {
		t.Fatalf("metrics text:\n%s\nwant:\n%s", b.String(), want)
	}

	m.setDBUp(true)
	b.Reset()
	_ = m.writeTo(&b)
	if !strings.Contains(b.String(), "\ncrypto_exchange_lab_db_up 1\n") {
		t.Fatalf("db_up not 1 after setDBUp(true):\n%s", b.String())
	}
}

func TestEscapeLabel(t *testing.T) {
	if got := escapeLabel("a\"b\\c\nd"); got != `a\"b\\c\nd` {
		t.Fatalf("escapeLabel = %q", got)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	h := newMetrics("1").handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	if !strings.Contains(rec.Body.String(), `crypto_exchange_lab_info{release="1"} 1`) {
		t.Errorf("body lacks the info series:\n%s", rec.Body.String())
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/other", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("/other on the metrics port: %d", rec.Code)
	}
}
