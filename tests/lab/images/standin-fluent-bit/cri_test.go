package main

import (
	"testing"
	"time"
)

func TestCRILinesAndPartsJoin(t *testing.T) {
	var j criJoiner
	now := time.Now()
	lines := []string{
		"2026-12-03T18:00:00.100000000Z stdout P first ",
		"2026-12-03T18:00:00.200000000Z stderr F an error",
		"2026-12-03T18:00:00.300000000Z stdout P second ",
		"2026-12-03T18:00:00.400000000Z stdout F end",
	}
	var got []object
	var times []time.Time
	for _, line := range lines {
		l, ok := parseCRI(line)
		if !ok {
			t.Fatalf("not CRI: %q", line)
		}
		if ts, body, done := j.add(l, now); done {
			got, times = append(got, body), append(times, ts)
		}
	}
	if len(got) != 2 {
		t.Fatalf("records %v", got)
	}
	if s := mustJSON(t, got[0]); s != `{"stream":"stderr","_p":"F","log":"an error"}` {
		t.Errorf("stderr line %s", s)
	}
	if s := mustJSON(t, got[1]); s != `{"stream":"stdout","_p":"F","log":"first second end"}` {
		t.Errorf("joined %s", s)
	}
	if want := time.Date(2026, 12, 3, 18, 0, 0, 100000000, time.UTC); !times[1].Equal(want) {
		t.Errorf("the joined record's time is %v, want the first part's", times[1])
	}
}

func TestCRIEdgeCases(t *testing.T) {
	if l, ok := parseCRI("2026-12-03T18:00:00Z stdout F"); !ok || l.message != "" {
		t.Errorf("empty message: %+v %v", l, ok)
	}
	for _, bad := range []string{"hello world", "2026-12-03T18:00:00Z stdin F x", "2026-12-03T18:00:00Z stdout X x", "yesterday stdout F x"} {
		if _, ok := parseCRI(bad); ok {
			t.Errorf("%q parsed as CRI", bad)
		}
	}
	var j criJoiner
	l, _ := parseCRI("2026-12-03T18:00:00Z stdout P never ends")
	start := time.Now()
	j.add(l, start)
	if len(j.stale(start.Add(time.Second), criFlushTimeout)) != 0 {
		t.Error("flushed before the timeout")
	}
	stale := j.stale(start.Add(criFlushTimeout), criFlushTimeout)
	if len(stale) != 1 || mustJSON(t, stale[0].body) != `{"stream":"stdout","_p":"P","log":"never ends"}` {
		t.Errorf("stale %v", stale)
	}
}

func TestTagExpansion(t *testing.T) {
	in := &tailInput{cfg: tailConfig{tag: "kube.*"}}
	if got := in.tagOf("/var/log/containers/a_b_c-0123.log"); got != "kube.var.log.containers.a_b_c-0123.log" {
		t.Errorf("tag %s", got)
	}
	in.cfg.tag = "fixed"
	if got := in.tagOf("/x/y.log"); got != "fixed" {
		t.Errorf("tag %s", got)
	}
	for _, c := range []struct {
		pattern, tag string
		want         bool
	}{{"kube.*", "kube.var.log", true}, {"kube.*", "kubex", false}, {"*", "x", true}, {"a.*.c", "a.b.c", true}, {"a.*.c", "a.b.d", false}} {
		if matchTag(c.pattern, c.tag) != c.want {
			t.Errorf("match %s %s", c.pattern, c.tag)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := object{{"x", v}}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b[5 : len(b)-1])
}
