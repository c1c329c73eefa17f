package main

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
)

const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// requestKey is one label set of the request counter.
type requestKey struct {
	code   string
	method string
}

// metrics holds the little state the lab's Prometheus scrapes. It is written by the app port's
// handlers and read by the metrics port, hence the mutex.
type metrics struct {
	release string

	mu       sync.Mutex
	requests map[requestKey]uint64
	dbUp     bool
}

func newMetrics(release string) *metrics {
	return &metrics{release: release, requests: make(map[requestKey]uint64)}
}

func (m *metrics) countRequest(code int, method string) {
	key := requestKey{code: strconv.Itoa(code), method: knownMethod(method)}
	m.mu.Lock()
	m.requests[key]++
	m.mu.Unlock()
}

func (m *metrics) setDBUp(up bool) {
	m.mu.Lock()
	m.dbUp = up
	m.mu.Unlock()
}

// knownMethod keeps the counter's label values bounded: a client sending made-up methods must
// not grow the exposition without limit.
func knownMethod(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return "OTHER"
}

// writeTo renders the text exposition format 0.0.4; the counter's series are sorted by code,
// then method, so the output is stable for diffs and tests.
func (m *metrics) writeTo(w io.Writer) error {
	m.mu.Lock()
	keys := make([]requestKey, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	counts := make(map[requestKey]uint64, len(keys))
	for _, k := range keys {
		counts[k] = m.requests[k]
	}
	dbUp := 0
	if m.dbUp {
		dbUp = 1
	}
	m.mu.Unlock()

	sort.Slice(keys, func(i, j int) bool {
		if keys[i].code != keys[j].code {
			return keys[i].code < keys[j].code
		}
		return keys[i].method < keys[j].method
	})

	var b strings.Builder
	b.WriteString("# HELP crypto_exchange_lab_http_requests_total HTTP requests answered on the app port, by status code and method.\n")
	b.WriteString("# TYPE crypto_exchange_lab_http_requests_total counter\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "crypto_exchange_lab_http_requests_total{code=\"%s\",method=\"%s\"} %d\n",
			escapeLabel(k.code), escapeLabel(k.method), counts[k])
	}
	b.WriteString("# HELP crypto_exchange_lab_db_up Whether the last database query succeeded (1) or not (0).\n")
	b.WriteString("# TYPE crypto_exchange_lab_db_up gauge\n")
	fmt.Fprintf(&b, "crypto_exchange_lab_db_up %d\n", dbUp)
	b.WriteString("# HELP crypto_exchange_lab_info The release of the lab app this pod runs.\n")
	b.WriteString("# TYPE crypto_exchange_lab_info gauge\n")
	fmt.Fprintf(&b, "crypto_exchange_lab_info{release=\"%s\"} 1\n", escapeLabel(m.release))
	_, err := io.WriteString(w, b.String())
	return err
}

// escapeLabel escapes a label value as the exposition format requires.
func escapeLabel(v string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
}

// handler serves /metrics without touching the database: the readiness probe asks it.
func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", metricsContentType)
		_ = m.writeTo(w)
	})
	return mux
}
