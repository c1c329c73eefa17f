package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Fluent Bit's log levels (Log_Level).
const (
	levelOff = iota
	levelError
	levelWarn
	levelInfo
	levelDebug
	levelTrace
)

var levelByName = map[string]int{
	"off": levelOff, "error": levelError, "warn": levelWarn, "info": levelInfo, "debug": levelDebug, "trace": levelTrace,
}

// Fluent Bit pads the level to five characters: [error] [ warn] [ info] [debug] [trace].
var levelLabel = map[int]string{
	levelError: "error", levelWarn: " warn", levelInfo: " info", levelDebug: "debug", levelTrace: "trace",
}

// flbLogger writes Fluent Bit's line layout on stderr:
// [2026/12/03 18:00:00.123] [ info] [output:es:es.0] message
type flbLogger struct {
	mu    sync.Mutex
	w     io.Writer
	level int
	now   func() time.Time
}

func newFlbLogger(w io.Writer, level int) *flbLogger {
	return &flbLogger{w: w, level: level, now: time.Now}
}

func (l *flbLogger) setLevel(level int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.level = level
}

func (l *flbLogger) log(level int, scope, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if level > l.level {
		return
	}
	fmt.Fprintf(l.w, "[%s] [%s] [%s] %s\n", l.now().Format("2006/01/02 15:04:05.000"), levelLabel[level],
		scope, fmt.Sprintf(format, args...))
}

func (l *flbLogger) errorf(scope, format string, args ...any) {
	l.log(levelError, scope, format, args...)
}
func (l *flbLogger) warnf(scope, format string, args ...any) {
	l.log(levelWarn, scope, format, args...)
}
func (l *flbLogger) infof(scope, format string, args ...any) {
	l.log(levelInfo, scope, format, args...)
}
func (l *flbLogger) debugf(scope, format string, args ...any) {
	l.log(levelDebug, scope, format, args...)
}

// The scopes Fluent Bit names its plugin instances by.
const (
	scopeTail   = "input:tail:tail.0"
	scopeKube   = "filter:kubernetes:kubernetes.0"
	scopeES     = "output:es:es.0"
	scopeEngine = "engine"
)
