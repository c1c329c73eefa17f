package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	maxLineBytes = 32 << 10               // Buffer_Max_Size default: longer lines are long lines
	rotateWait   = 5 * time.Second        // Rotate_Wait default: a rotated file is read this long
	pollInterval = 250 * time.Millisecond // Fluent Bit uses inotify; the stand-in polls
	saveInterval = 2 * time.Second
	readBlock    = 64 << 10
)

// fileID names one file: where its path leads (symlinks resolved) and its inode, so a rotated
// file and its successor at the same path are two files.
type fileID struct {
	Path  string `json:"name"`
	Inode uint64 `json:"inode"`
}

// tailedFile is one followed file.
type tailedFile struct {
	id        fileID
	name      string // the path the glob found (the symlink): the tag is made of it
	f         *os.File
	readPos   int64  // next byte to read
	lineStart int64  // start of the line being read: the offset saved in the DB
	partial   []byte // the line being read
	skipping  bool   // inside a long line being skipped
	stopped   bool   // a long line without Skip_Long_Lines: no more reading, as Fluent Bit
	joiner    criJoiner
	rotatedAt time.Time // when the glob stopped leading here; zero while it does
}

// tailInput is the tail input: glob, follow, split lines, parse, emit.
type tailInput struct {
	cfg     tailConfig
	log     *flbLogger
	emit    func(record)
	files   map[fileID]*tailedFile
	saved   map[fileID]int64 // offsets read from the DB at start
	started bool             // the first scan is done: later files are read from their head
	dirty   bool
	saveAt  time.Time
	buf     []byte // one read buffer for every file
	watches int    // files followed so far: the watch_fd of the log line
	now     func() time.Time
}

func newTailInput(cfg tailConfig, log *flbLogger, emit func(record)) *tailInput {
	t := &tailInput{cfg: cfg, log: log, emit: emit, files: map[fileID]*tailedFile{}, buf: make([]byte, readBlock), now: time.Now}
	t.saved = t.loadOffsets()
	return t
}

// run scans at start and every Refresh_Interval, reads every pollInterval, and on ctx's end
// reads what is left and saves the offsets.
func (t *tailInput) run(ctx context.Context) {
	t.scan()
	scan := time.NewTicker(t.cfg.refreshInterval)
	defer scan.Stop()
	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	for {
		t.poll()
		select {
		case <-ctx.Done():
			t.stop()
			return
		case <-scan.C:
			t.scan()
		case <-poll.C:
		}
	}
}

// scan globs Path and starts following new files.
func (t *tailInput) scan() {
	matches, err := filepath.Glob(t.cfg.path)
	if err != nil {
		t.log.errorf(scopeTail, "invalid Path pattern %s: %v", t.cfg.path, err)
		return
	}
	seen := map[fileID]bool{}
	for _, name := range matches {
		id, size, ok := identify(name)
		if !ok || seen[id] {
			continue
		}
		seen[id] = true
		if f, following := t.files[id]; following {
			f.rotatedAt = time.Time{} // the path leads here again
		} else {
			t.follow(name, id, size)
		}
	}
	for id, f := range t.files {
		if !seen[id] && f.rotatedAt.IsZero() {
			f.rotatedAt = t.now()
			t.log.debugf(scopeTail, "%s (inode=%d) rotated or removed: read for %s more", f.id.Path, id.Inode, rotateWait)
		}
	}
	t.started = true
}

// identify resolves symlinks (/var/log/containers/*.log lead into /var/log/pods/...).
func identify(name string) (fileID, int64, bool) {
	resolved, err := filepath.EvalSymlinks(name)
	if err != nil {
		return fileID{}, 0, false // a dangling link: the pod's log is gone
	}
	st, err := os.Stat(resolved)
	if err != nil || !st.Mode().IsRegular() {
		return fileID{}, 0, false
	}
	return fileID{Path: resolved, Inode: inodeOf(st)}, st.Size(), true
}

func inodeOf(st os.FileInfo) uint64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return sys.Ino
	}
	return 0
}

// follow opens a file at its start offset: the DB's, else its end for a file there at start
// (Read_from_Head Off), else its head (a file that appeared later, read from its first line).
func (t *tailInput) follow(name string, id fileID, size int64) {
	f, err := os.Open(id.Path)
	if err != nil {
		t.log.errorf(scopeTail, "cannot open %s: %v", id.Path, err)
		return
	}
	offset, fromDB := t.saved[id]
	switch {
	case fromDB && offset > size:
		offset = 0 // truncated while we were away
	case !fromDB && !t.started:
		offset = size
	case !fromDB:
		offset = 0
	}
	t.files[id] = &tailedFile{id: id, name: name, f: f, readPos: offset, lineStart: offset}
	t.dirty = true
	t.watches++
	t.log.infof(scopeTail, "inotify_fs_add(): inode=%d watch_fd=%d name=%s offset=%d", id.Inode, t.watches, name, offset)
}

// poll reads every followed file to its end, flushes stale partial lines, drops rotated files
// after Rotate_Wait, and saves the offsets now and then.
func (t *tailInput) poll() {
	now := t.now()
	for id, f := range t.files {
		t.read(f)
		t.emitStale(f, now, criFlushTimeout)
		if !f.rotatedAt.IsZero() && now.Sub(f.rotatedAt) >= rotateWait {
			t.emitStale(f, now, 0)
			f.f.Close()
			delete(t.files, id)
			t.dirty = true
		}
	}
	if t.dirty && now.Sub(t.saveAt) >= saveInterval {
		t.saveOffsets()
	}
}

// stop reads what is left, sends the partial lines, and saves the offsets.
func (t *tailInput) stop() {
	t.poll()
	for _, f := range t.files {
		t.emitStale(f, t.now(), 0)
	}
	t.saveOffsets()
	for _, f := range t.files {
		f.f.Close()
	}
}

func (t *tailInput) read(f *tailedFile) {
	if f.stopped {
		return
	}
	st, err := f.f.Stat()
	if err != nil {
		return
	}
	if st.Size() < f.readPos {
		t.log.infof(scopeTail, "%s truncated: reading from the start", f.id.Path)
		f.readPos, f.lineStart, f.partial, f.skipping, f.joiner = 0, 0, nil, false, criJoiner{}
		t.dirty = true
	}
	for !f.stopped {
		n, err := f.f.ReadAt(t.buf, f.readPos)
		if n > 0 {
			t.consume(f, t.buf[:n])
			t.dirty = true
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.log.errorf(scopeTail, "reading %s: %v", f.id.Path, err)
			}
			return
		}
	}
}

// consume splits data into lines; the last, unterminated one waits for more data.
func (t *tailInput) consume(f *tailedFile, data []byte) {
	for len(data) > 0 && !f.stopped {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			f.readPos += int64(len(data))
			if !f.skipping {
				f.partial = append(f.partial, data...)
				if len(f.partial) > maxLineBytes {
					t.longLine(f)
				}
			}
			return
		}
		f.readPos += int64(i + 1)
		if f.skipping {
			f.skipping = false
		} else {
			line := append(f.partial, data[:i]...)
			f.partial = f.partial[:0]
			if len(line) > maxLineBytes {
				t.longLine(f)
				f.skipping = false
			} else {
				t.line(f, string(line))
			}
		}
		f.lineStart = f.readPos
		data = data[i+1:]
	}
}

// longLine: with Skip_Long_Lines the line is skipped with a warning; without, Fluent Bit stops
// reading the file.
func (t *tailInput) longLine(f *tailedFile) {
	f.partial = nil
	if t.cfg.skipLongLines {
		f.skipping = true
		t.log.warnf(scopeTail, "file=%s requires a larger buffer size, lines are too long. Skipping file.", f.name)
		return
	}
	f.stopped = true
	t.log.errorf(scopeTail, "file=%s requires a larger buffer size, lines are too long. Skipping file.", f.name)
}

func (t *tailInput) line(f *tailedFile, line string) {
	tag := t.tagOf(f.name)
	if !t.cfg.criParser {
		t.emit(record{tag: tag, time: t.now(), body: object{{"log", line}}})
		return
	}
	l, ok := parseCRI(line)
	if !ok {
		// The multiline parser passes a line its rule does not match as it is.
		t.emit(record{tag: tag, time: t.now(), body: object{{"log", line}}})
		return
	}
	if ts, body, done := f.joiner.add(l, t.now()); done {
		t.emit(record{tag: tag, time: ts, body: body})
	}
}

func (t *tailInput) emitStale(f *tailedFile, now time.Time, timeout time.Duration) {
	for _, r := range f.joiner.stale(now, timeout) {
		r.tag = t.tagOf(f.name)
		t.emit(r)
	}
}

// tagOf expands the `*` of Tag with the file's path, '/' turned into '.', without the leading
// dot: /var/log/containers/a.log with kube.* → kube.var.log.containers.a.log.
func (t *tailInput) tagOf(name string) string {
	if !strings.Contains(t.cfg.tag, "*") {
		return t.cfg.tag
	}
	expanded := strings.TrimPrefix(strings.ReplaceAll(name, "/", "."), ".")
	return strings.Replace(t.cfg.tag, "*", expanded, 1)
}

// The offsets DB. Fluent Bit keeps them in SQLite at DB; the stand-in writes JSON to
// <DB>.standin.json (same role: a restart resumes where it stopped), and never touches DB itself.

type offsetsFile struct {
	Note  string        `json:"note"`
	Files []savedOffset `json:"files"`
}

type savedOffset struct {
	fileID
	Offset int64 `json:"offset"`
}

func (t *tailInput) dbPath() string {
	if t.cfg.db == "" {
		return ""
	}
	return t.cfg.db + ".standin.json"
}

func (t *tailInput) loadOffsets() map[fileID]int64 {
	saved := map[fileID]int64{}
	path := t.dbPath()
	if path == "" {
		return saved
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return saved
	}
	var db offsetsFile
	if err == nil {
		err = json.Unmarshal(data, &db)
	}
	if err != nil {
		t.log.errorf(scopeTail, "cannot read the offsets in %s, starting without them: %v", path, err)
		return saved
	}
	for _, s := range db.Files {
		saved[s.fileID] = s.Offset
	}
	return saved
}

// saveOffsets writes every followed file's offset, atomically (temporary file, then rename).
func (t *tailInput) saveOffsets() {
	t.saveAt, t.dirty = t.now(), false
	path := t.dbPath()
	if path == "" {
		return
	}
	db := offsetsFile{Note: "bootstrap lab stand-in of Fluent Bit's tail DB (the real one is SQLite)", Files: []savedOffset{}}
	for _, f := range t.files {
		db.Files = append(db.Files, savedOffset{f.id, f.lineStart})
	}
	data, _ := json.MarshalIndent(db, "", " ")
	tmp := path + ".tmp"
	err := os.WriteFile(tmp, data, 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		t.log.errorf(scopeTail, "cannot save the offsets to %s: %v", path, err)
	}
}
