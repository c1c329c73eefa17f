package main

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// requestEntry is one line of the request log. The field order is the struct's order, so the
// lines read the same in `kubectl logs` and in Elasticsearch.
type requestEntry struct {
	Time       string `json:"time"`
	Level      string `json:"level"`
	Msg        string `json:"msg"`
	Method     string `json:"method"`
	Path       string `json:"path"`
	Status     int    `json:"status"`
	Release    string `json:"release"`
	Pod        string `json:"pod"`
	DurationMS int64  `json:"duration_ms"`
}

// eventEntry is a line that is not about a request (start, stop, a failing server).
type eventEntry struct {
	Time    string `json:"time"`
	Level   string `json:"level"`
	Msg     string `json:"msg"`
	Release string `json:"release,omitempty"`
	Pod     string `json:"pod,omitempty"`
	Listen  string `json:"listen,omitempty"`
	Metrics string `json:"metrics_listen,omitempty"`
	Table   string `json:"table,omitempty"`
	Error   string `json:"error,omitempty"`
}

// requestLog writes JSON lines, one Write call each, so concurrent requests never interleave
// within a line and the log shipper sees whole lines as soon as they happen.
type requestLog struct {
	mu  sync.Mutex
	out io.Writer
	now func() time.Time
}

func newRequestLog(out io.Writer) *requestLog {
	return &requestLog{out: out, now: time.Now}
}

// timestamp is RFC 3339 in UTC with milliseconds, e.g. 2026-12-03T18:00:00.123Z.
func (l *requestLog) timestamp() string {
	return l.now().UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func (l *requestLog) request(e requestEntry) {
	e.Time, e.Level, e.Msg = l.timestamp(), "info", "request"
	l.write(e)
}

func (l *requestLog) event(level string, e eventEntry) {
	e.Time, e.Level = l.timestamp(), level
	l.write(e)
}

func (l *requestLog) write(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		return
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.out.Write(line)
}
