package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// queryTimeout bounds one database question so a hung server cannot pile up requests.
const queryTimeout = 5 * time.Second

// app is the HTTP side of the service on the app port.
type app struct {
	store   greetingStore
	table   string
	release string
	pod     string
	metrics *metrics
	log     *requestLog
}

// routes answers / and /healthz; the mux's own 404 covers every other path. Every request,
// whatever its answer, is counted and logged once.
func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	// "/{$}" matches the path "/" only; the query string plays no part in routing, so
	// "/?probe=abc" (the log shipping check) lands here too.
	mux.HandleFunc("GET /{$}", a.greet)
	mux.HandleFunc("GET /healthz", healthz)
	return a.observe(mux)
}

func (a *app) greet(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	message, err := a.store.FirstMessage(ctx)
	switch {
	case errors.Is(err, errNoRow):
		// The database answered: it is up even though the table is empty.
		a.metrics.setDBUp(true)
		plainText(w, http.StatusServiceUnavailable, fmt.Sprintf("no row in %s\n", a.table))
	case err != nil:
		a.metrics.setDBUp(false)
		plainText(w, http.StatusServiceUnavailable, fmt.Sprintf("database unavailable: %v\n", err))
	default:
		a.metrics.setDBUp(true)
		plainText(w, http.StatusOK, fmt.Sprintf("%s\nrelease=%s pod=%s\n", message, a.release, a.pod))
	}
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	plainText(w, http.StatusOK, "ok\n")
}

func plainText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// observe wraps the mux: it records the status each request got, then counts and logs it.
func (a *app) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		a.metrics.countRequest(rec.status, r.Method)
		a.log.request(requestEntry{
			Method:     r.Method,
			Path:       r.URL.RequestURI(),
			Status:     rec.status,
			Release:    a.release,
			Pod:        a.pod,
			DurationMS: time.Since(start).Milliseconds(),
		})
	})
}

// statusRecorder remembers the status code a handler wrote (200 if it wrote none).
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status = code
		s.wroteHeader = true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(p)
}
