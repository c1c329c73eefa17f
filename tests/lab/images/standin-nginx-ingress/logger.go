package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Log levels of NIC's -log-level flag.
const (
	levelTrace = iota
	levelDebug
	levelInfo
	levelWarning
	levelError
	levelFatal
)

var levelNames = map[string]int{
	"trace": levelTrace, "debug": levelDebug, "info": levelInfo,
	"warning": levelWarning, "error": levelError, "fatal": levelFatal,
}

// logger writes the controller's own lines on stderr in NIC's glog-like layout
// (`I20261203 18:00:00.123456   1 standin] message`); the access log goes to stdout.
type logger struct {
	mu    sync.Mutex
	w     io.Writer
	level int
	now   func() time.Time
}

func newLogger(w io.Writer, level int) *logger {
	return &logger{w: w, level: level, now: time.Now}
}

func (l *logger) write(level int, mark byte, format string, args ...any) {
	if level < l.level {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%c%s %7d standin] %s\n", mark, l.now().UTC().Format("20060102 15:04:05.000000"),
		os.Getpid(), fmt.Sprintf(format, args...))
}

func (l *logger) debugf(format string, args ...any) { l.write(levelDebug, 'I', format, args...) }
func (l *logger) infof(format string, args ...any)  { l.write(levelInfo, 'I', format, args...) }
func (l *logger) warnf(format string, args ...any)  { l.write(levelWarning, 'W', format, args...) }
func (l *logger) errorf(format string, args ...any) { l.write(levelError, 'E', format, args...) }
