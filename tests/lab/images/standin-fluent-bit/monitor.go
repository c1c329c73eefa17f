package main

import (
	"encoding/json"
	"io"
	"net/http"
)

// monitorHandler is Fluent Bit's HTTP server (HTTP_Server On): the build information at / and,
// with Health_Check On, /api/v1/health. Every answer is marked as the stand-in's.
func monitorHandler(healthCheck bool, h *health) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"fluent-bit": map[string]any{
				"version": version,
				"edition": "Community",
				"flags":   []string{"FLB_HAVE_TLS", "FLB_HAVE_HTTP_SERVER"},
			},
			"bootstrap-lab": "stand-in",
		})
	})
	if healthCheck {
		mux.HandleFunc("GET /api/v1/health", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			if !h.healthy() {
				w.WriteHeader(http.StatusInternalServerError)
				io.WriteString(w, "error\n")
				return
			}
			io.WriteString(w, "ok\n")
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Bootstrap-Lab", "stand-in")
		mux.ServeHTTP(w, r)
	})
}
