package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
)

// logger writes Grafana-style logfmt lines:
//
//	logger=http.server t=2026-12-03T18:00:00.123456789Z level=info msg="Request Completed" method=GET ...
//
// Each line is one Write, so concurrent requests never interleave within a line.
type logger struct {
	mu  sync.Mutex
	out io.Writer
	now func() time.Time
}

func newLogger(out io.Writer) *logger {
	return &logger{out: out, now: time.Now}
}

// log writes one line; keyvals alternate key and value.
func (l *logger) log(name, level, msg string, keyvals ...any) {
	var b strings.Builder
	b.WriteString("logger=" + name)
	b.WriteString(" t=" + l.now().UTC().Format(time.RFC3339Nano))
	b.WriteString(" level=" + level)
	b.WriteString(" msg=" + logfmtValue(msg))
	for i := 0; i+1 < len(keyvals); i += 2 {
		fmt.Fprintf(&b, " %v=%s", keyvals[i], logfmtValue(fmt.Sprint(keyvals[i+1])))
	}
	b.WriteByte('\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.out, b.String())
}

// logfmtValue quotes a value when a reader would otherwise split it: spaces, '=', quotes,
// control characters (a client controls the request path) or an empty value.
func logfmtValue(v string) string {
	if v == "" {
		return `""`
	}
	for _, r := range v {
		if r == ' ' || r == '=' || r == '"' || r == '\\' || !unicode.IsPrint(r) {
			return strconv.Quote(v)
		}
	}
	return v
}
