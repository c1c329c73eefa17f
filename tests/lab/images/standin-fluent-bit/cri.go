package main

import (
	"strings"
	"time"
)

// criLine is one line of the CRI log format containerd writes:
// `<RFC3339Nano time> <stdout|stderr> <P|F> <message>`; P marks a part of a longer line.
type criLine struct {
	time    time.Time
	stream  string
	partial bool
	message string
}

// parseCRI splits a CRI line; ok is false for anything else.
func parseCRI(line string) (criLine, bool) {
	ts, rest, ok1 := strings.Cut(line, " ")
	stream, rest, ok2 := strings.Cut(rest, " ")
	tag, message, _ := strings.Cut(rest, " ")
	if !ok1 || !ok2 || (stream != "stdout" && stream != "stderr") || (tag != "P" && tag != "F") {
		return criLine{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return criLine{}, false
	}
	return criLine{time: t, stream: stream, partial: tag == "P", message: message}, true
}

// criFlushTimeout: a P part whose F never comes is sent alone after this long (Fluent Bit's
// multiline flush timeout for the cri parser).
const criFlushTimeout = 4 * time.Second

// criJoiner is the `cri` multiline parser for one file: P parts of a stream are joined with the
// following lines of the same stream up to the F line.
type criJoiner struct {
	pending map[string]*criPending // by stream
}

type criPending struct {
	time  time.Time // of the first part: the event's time
	text  strings.Builder
	since time.Time // when the first part was read
}

// add takes one line and returns a complete record body when the line completes one.
func (j *criJoiner) add(l criLine, now time.Time) (time.Time, object, bool) {
	p := j.pending[l.stream]
	if l.partial {
		if p == nil {
			if j.pending == nil {
				j.pending = map[string]*criPending{}
			}
			p = &criPending{time: l.time, since: now}
			j.pending[l.stream] = p
		}
		p.text.WriteString(l.message)
		return time.Time{}, nil, false
	}
	if p == nil {
		return l.time, criBody(l.stream, "F", l.message), true
	}
	delete(j.pending, l.stream)
	p.text.WriteString(l.message)
	return p.time, criBody(l.stream, "F", p.text.String()), true
}

// stale returns the joined parts that waited longer than the flush timeout. Their _p stays "P":
// the line never ended.
func (j *criJoiner) stale(now time.Time, timeout time.Duration) []record {
	var out []record
	for stream, p := range j.pending {
		if now.Sub(p.since) >= timeout {
			out = append(out, record{time: p.time, body: criBody(stream, "P", p.text.String())})
			delete(j.pending, stream)
		}
	}
	return out
}

// criBody: the parser's keys in its order (time goes to the event timestamp).
func criBody(stream, p, log string) object {
	return object{{"stream", stream}, {"_p", p}, {"log", log}}
}
