package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// logDirs is a node's /var/log in miniature: containers/*.log are symlinks into pods/.
type logDirs struct {
	root, containers, pods string
}

func newLogDirs(t *testing.T) logDirs {
	t.Helper()
	root := t.TempDir()
	d := logDirs{root: root, containers: filepath.Join(root, "containers"), pods: filepath.Join(root, "pods")}
	os.MkdirAll(d.containers, 0o755)
	os.MkdirAll(d.pods, 0o755)
	return d
}

// addContainer writes a pod's log file and its containers/ link; it returns the log file.
func (d logDirs) addContainer(t *testing.T, pod, content string) string {
	t.Helper()
	dir := filepath.Join(d.pods, "crypto-exchange_"+pod+"_uid", "django")
	os.MkdirAll(dir, 0o755)
	file := filepath.Join(dir, "0.log")
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(d.containers, pod+"_crypto-exchange_django-"+containerID+".log")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	return file
}

func appendTo(t *testing.T, file, content string) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString(content)
}

func cri(msg string) string { return "2026-12-03T18:00:00.5Z stdout F " + msg + "\n" }

type collected struct {
	records []record
}

func (c *collected) emit(r record) { c.records = append(c.records, r) }

func (c *collected) logs() []string {
	var out []string
	for _, r := range c.records {
		v, _ := r.body.get("log")
		out = append(out, v.(string))
	}
	return out
}

func newTestTail(t *testing.T, d logDirs, db string) (*tailInput, *collected, *syncLog) {
	t.Helper()
	c := &collected{}
	logs := &syncLog{}
	cfg := tailConfig{tag: "kube.*", path: filepath.Join(d.containers, "*.log"), db: db, criParser: true, skipLongLines: true}
	return newTailInput(cfg, newFlbLogger(logs, levelDebug), c.emit), c, logs
}

func TestFilesAtStartAreTailedAndLaterOnesReadFromTheirHead(t *testing.T) {
	d := newLogDirs(t)
	old := d.addContainer(t, "old-pod", cri("before start"))
	in, c, _ := newTestTail(t, d, "")
	in.scan()
	in.poll()
	if len(c.records) != 0 {
		t.Fatalf("a file present at start was read from its head: %v", c.logs())
	}
	appendTo(t, old, cri("after start"))
	d.addContainer(t, "new-pod", cri("first line")+cri("second line")+"2026-12-03T18:00:00Z stdout F unterminated")
	in.scan()
	in.poll()
	got := strings.Join(c.logs(), "|")
	if !strings.Contains(got, "after start") || !strings.Contains(got, "first line|second line") || strings.Contains(got, "unterminated") || len(c.records) != 3 {
		t.Fatalf("records %q", got)
	}
	wantTag := "kube." + strings.TrimPrefix(strings.ReplaceAll(d.containers, "/", "."), ".") + ".new-pod_crypto-exchange_django-" + containerID + ".log"
	for _, r := range c.records {
		if v, _ := r.body.get("log"); v == "second line" && r.tag != wantTag {
			t.Fatalf("tag %s, want %s", r.tag, wantTag)
		}
	}
}

func TestOffsetsSurviveARestart(t *testing.T) {
	d := newLogDirs(t)
	db := filepath.Join(t.TempDir(), "tail.db")
	in, c, _ := newTestTail(t, d, db)
	in.scan()
	file := d.addContainer(t, "p", cri("one"))
	in.scan()
	in.poll()
	appendTo(t, file, cri("two")+"2026-12-03T18:00:00Z stdout F half")
	in.poll()
	in.stop()
	if len(c.records) != 2 {
		t.Fatalf("first run read %v", c.logs())
	}
	if _, err := os.Stat(db); err == nil {
		t.Fatal("the stand-in wrote the SQLite DB path itself")
	}
	var saved offsetsFile
	data, err := os.ReadFile(db + ".standin.json")
	if err != nil || json.Unmarshal(data, &saved) != nil || len(saved.Files) != 1 || saved.Files[0].Offset != int64(2*len(cri("one"))) {
		t.Fatalf("offsets file %s (%v)", data, err)
	}
	appendTo(t, file, " done\n"+cri("three"))
	again, c2, _ := newTestTail(t, d, db)
	again.scan()
	again.poll()
	if got := strings.Join(c2.logs(), "|"); got != "half done|three" {
		t.Fatalf("after the restart: %q", got)
	}
}

func TestRotationAndTruncation(t *testing.T) {
	d := newLogDirs(t)
	in, c, _ := newTestTail(t, d, "")
	in.scan()
	file := d.addContainer(t, "p", cri("a"))
	in.scan()
	in.poll()
	// containerd's rotation: the file is renamed (and still written a little), a new one is made.
	appendTo(t, file, cri("b"))
	os.Rename(file, file+".20261203-180000")
	os.WriteFile(file, []byte(cri("c")), 0o644)
	in.scan()
	in.poll()
	// Two files: their order is not defined, each one's is.
	if got := strings.Join(c.logs(), "|"); got != "a|b|c" && got != "a|c|b" {
		t.Fatalf("across rotation: %q", got)
	}
	// copytruncate: the same file starts again (seen as shorter than what was read).
	os.Truncate(file, 0)
	in.poll()
	appendTo(t, file, cri("d"))
	in.poll()
	if got := c.logs(); len(got) != 4 || got[3] != "d" {
		t.Fatalf("after truncation: %q", got)
	}
}

func TestLongLinesAreSkipped(t *testing.T) {
	d := newLogDirs(t)
	in, c, logs := newTestTail(t, d, "")
	in.scan()
	long := cri(strings.Repeat("x", 100<<10)) // longer than one read block too
	d.addContainer(t, "p", cri("before")+long+cri("after"))
	in.scan()
	in.poll()
	if got := strings.Join(c.logs(), "|"); got != "before|after" {
		t.Fatalf("records %q", got)
	}
	if !strings.Contains(logs.String(), "[ warn] [input:tail:tail.0] file=") || !strings.Contains(logs.String(), "lines are too long") {
		t.Fatalf("log:\n%s", logs)
	}
}
