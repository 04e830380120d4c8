package eventagg

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventagg/eventagg/internal/tmpfs"
	"github.com/ncruces/go-sqlite3"
)

// logBuffer collects a store's log records.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(b, nil)) }

// watchCheckpoints makes the store opened with opts report each checkpoint
// of its checkpointer on the channel returned.
func watchCheckpoints(opts *SQLiteOptions) <-chan ckptResult {
	ch := make(chan ckptResult, 1024)
	opts.onCheckpoint = func(r ckptResult) { ch <- r }
	return ch
}

// awaitCheckpoint waits for a checkpoint for which ok is true.
func awaitCheckpoint(t *testing.T, ch <-chan ckptResult, what string, ok func(ckptResult) bool) ckptResult {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case r := <-ch:
			if ok(r) {
				return r
			}
		case <-timeout:
			t.Fatalf("no checkpoint %s within 30s", what)
		}
	}
}

func complete(r ckptResult) bool { return r.err == nil && r.log > 0 && r.log == r.copied }

// batchOf returns n events of topic t named prefix-0..n-1 with payloads of
// about size bytes.
func batchOf(prefix string, n, size int) []Event {
	payload := json.RawMessage(`"` + strings.Repeat("p", size) + `"`)
	events := make([]Event, n)
	for i := range events {
		events[i] = Event{Topic: "t", EventID: prefix + "-" + strconv.Itoa(i), Timestamp: time.Unix(1, 0), Payload: payload}
	}
	return events
}

func sizeOf(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// countInMainFile copies the database file alone, without its write-ahead
// log, and counts the events the copy holds: those a checkpoint moved into it.
func countInMainFile(t *testing.T, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(cp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c := rawConn(t, cp)
	stmt, _, err := c.Prepare(`SELECT count(*) FROM events`)
	if err != nil {
		t.Fatalf("the database file alone is not readable: %v", err)
	}
	defer stmt.Close()
	var n int64
	if stmt.Step() {
		n = stmt.ColumnInt64(0)
	}
	if err := stmt.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func metric(s MetricsReporter, name string) float64 {
	for _, m := range s.StoreMetrics() {
		if m.Name == name {
			return m.Value
		}
	}
	return -1
}

// TestSQLiteCheckpointsWhileWriting writes many times the checkpoint
// threshold into the log without a pause and checks that the database file
// took the data and the log stopped growing: the checkpointer copies it
// while writes go on, and the writer restarts it past the hard threshold.
func TestSQLiteCheckpointsWhileWriting(t *testing.T) {
	t.Parallel()
	const threshold = 32 // pages
	opts := &SQLiteOptions{Sync: SyncNormal, ckptPages: threshold, ckptIdle: time.Hour}
	ckpts := watchCheckpoints(opts)
	s, path := openSQLiteForTest(t, opts)
	const batches, perBatch, size = 200, 50, 400
	for i := range batches {
		if _, err := s.Append(t.Context(), batchOf("b"+strconv.Itoa(i), perBatch, size), AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	awaitCheckpoint(t, ckpts, "that copied the log", func(r ckptResult) bool { return r.err == nil && r.copied > 0 })
	data := int64(batches * perBatch * size)
	if got := sizeOf(t, path); got < data/2 {
		t.Errorf("database file is %d bytes after %d bytes of payloads were committed; the checkpoints did not copy the log into it", got, data)
	}
	// The log stays within the hard threshold and a batch, however much was
	// written.
	frame := int64(4096 + 24)
	if got, bound := sizeOf(t, path+"-wal"), (ckptHardFactor*threshold+20)*frame; got > bound || got > data/3 {
		t.Errorf("write-ahead log is %d bytes after %d bytes of payloads; want at most %d: it keeps growing", got, data, bound)
	}
	if n := metric(s, "eventagg_sqlite_checkpoints_total"); n < 1 {
		t.Errorf("eventagg_sqlite_checkpoints_total = %v, want at least 1", n)
	}
	if n := metric(s, "eventagg_sqlite_wal_bytes"); n != float64(sizeOf(t, path+"-wal")) {
		t.Errorf("eventagg_sqlite_wal_bytes = %v, want the size of the log file, %d", n, sizeOf(t, path+"-wal"))
	}
}

// TestSQLiteCheckpointsWhenIdle commits less than the threshold, then waits:
// the idle checkpoint moves everything into the database file, and the next
// commit writes the log from its start.
func TestSQLiteCheckpointsWhenIdle(t *testing.T) {
	t.Parallel()
	opts := &SQLiteOptions{ckptPages: 1 << 30, ckptIdle: 20 * time.Millisecond}
	ckpts := watchCheckpoints(opts)
	s, path := openSQLiteForTest(t, opts)
	if _, err := s.Append(t.Context(), batchOf("first", 100, 400), AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	awaitCheckpoint(t, ckpts, "of the whole log after writes paused", complete)
	if n := countInMainFile(t, path); n != 100 {
		t.Errorf("the database file alone holds %d events, want all 100", n)
	}
	walSize := sizeOf(t, path+"-wal")
	if _, err := s.Append(t.Context(), batchOf("second", 100, 400), AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	awaitCheckpoint(t, ckpts, "of the whole log after writes paused", complete)
	if n := countInMainFile(t, path); n != 200 {
		t.Errorf("the database file alone holds %d events, want all 200", n)
	}
	if got := sizeOf(t, path+"-wal"); got > walSize {
		t.Errorf("write-ahead log grew from %d to %d bytes after a complete checkpoint; want it written from its start", walSize, got)
	}
}

// TestSQLiteCheckpointFailureIsLogged fills the disk so that a checkpoint
// cannot grow the database file: the failure is logged and counted, and the
// next checkpoint after space is freed succeeds and says so.
func TestSQLiteCheckpointFailureIsLogged(t *testing.T) {
	t.Parallel()
	dir := tmpfs.Mount(t, 8<<20)
	var logs logBuffer
	opts := &SQLiteOptions{Sync: SyncNormal, Logger: logs.logger(), ckptPages: 1 << 30, ckptIdle: time.Hour}
	ckpts := watchCheckpoints(opts)
	s, err := OpenSQLite(filepath.Join(dir, "events.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Append(t.Context(), batchOf("b", 500, 1000), AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	free := tmpfs.Fill(t, dir)
	s.ckpt <- struct{}{} // what the writer sends past the threshold
	r := awaitCheckpoint(t, ckpts, "", func(ckptResult) bool { return true })
	if r.err == nil {
		t.Fatalf("checkpoint on a full disk = %+v, want an error", r)
	}
	if !strings.Contains(logs.String(), "checkpoint failed") || metric(s, "eventagg_sqlite_checkpoint_failures_total") != 1 {
		t.Errorf("the failed checkpoint was not logged and counted; failures = %v, log:\n%s",
			metric(s, "eventagg_sqlite_checkpoint_failures_total"), logs.String())
	}
	free()
	s.ckpt <- struct{}{}
	if r := awaitCheckpoint(t, ckpts, "", func(ckptResult) bool { return true }); !complete(r) {
		t.Fatalf("checkpoint after space was freed = %+v, want all of the log copied", r)
	}
	if !strings.Contains(logs.String(), "checkpoints succeed again") {
		t.Errorf("the recovery was not logged:\n%s", logs.String())
	}
}

// TestSQLiteNoticesVanishedFiles deletes, renames, replaces or truncates the
// database file or its log under an open store: the next Append fails with
// ErrDamaged, so does every later one, Ping reports it, and it is logged.
func TestSQLiteNoticesVanishedFiles(t *testing.T) {
	tests := []struct {
		name  string
		fault func(t *testing.T, path string)
	}{
		{"DatabaseDeleted", func(t *testing.T, path string) { must(t, os.Remove(path)) }},
		{"LogDeleted", func(t *testing.T, path string) { must(t, os.Remove(path+"-wal")) }},
		{"DatabaseRenamed", func(t *testing.T, path string) { must(t, os.Rename(path, path+".old")) }},
		{"DatabaseReplaced", func(t *testing.T, path string) {
			data, err := os.ReadFile(path)
			must(t, err)
			must(t, os.WriteFile(path+".new", data, 0o600))
			must(t, os.Rename(path+".new", path))
		}},
		{"DatabaseTruncated", func(t *testing.T, path string) { must(t, os.Truncate(path, 0)) }},
		{"LogTruncated", func(t *testing.T, path string) { must(t, os.Truncate(path+"-wal", 0)) }},
		{"BothTruncated", func(t *testing.T, path string) {
			must(t, os.Truncate(path, 0))
			must(t, os.Truncate(path+"-wal", 0))
		}},
	}
	for _, sync := range []Sync{SyncFull, SyncNormal} {
		for _, tt := range tests {
			t.Run(tt.name+"/sync="+strconv.Itoa(int(sync)), func(t *testing.T) {
				t.Parallel()
				path := filepath.Join(t.TempDir(), "events.db")
				s, err := OpenSQLite(path, &SQLiteOptions{Sync: sync})
				must(t, err)
				_, err = s.Append(t.Context(), batchOf("before", 50, 100), AppendOptions{})
				must(t, err)
				must(t, s.Close()) // checkpoints: the database file holds the events
				var logs logBuffer
				s, err = OpenSQLite(path, &SQLiteOptions{Sync: sync, Logger: logs.logger()})
				must(t, err)
				defer s.Close()
				if _, err := s.Append(t.Context(), batchOf("ok", 1, 10), AppendOptions{}); err != nil {
					t.Fatal(err)
				}

				tt.fault(t, path)
				for i := range 2 {
					if _, err := s.Append(t.Context(), batchOf("after"+strconv.Itoa(i), 5, 10), AppendOptions{}); !errors.Is(err, ErrDamaged) {
						t.Fatalf("Append %d after the fault = %v, want ErrDamaged", i, err)
					}
				}
				if err := s.Ping(t.Context()); !errors.Is(err, ErrDamaged) {
					t.Errorf("Ping after the fault = %v, want ErrDamaged", err)
				}
				if !strings.Contains(logs.String(), "store damaged") {
					t.Errorf("the damage was not logged:\n%s", logs.String())
				}
				if metric(s, "eventagg_sqlite_damaged") != 1 {
					t.Errorf("eventagg_sqlite_damaged = %v, want 1", metric(s, "eventagg_sqlite_damaged"))
				}
			})
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSQLiteNoticesVanishedFilesWhenIdle deletes the database under a store
// that writes nothing: Ping notices, and the next Append is refused.
func TestSQLiteNoticesVanishedFilesWhenIdle(t *testing.T) {
	t.Parallel()
	s, path := openSQLiteForTest(t, nil)
	must(t, s.Ping(t.Context()))
	must(t, os.Remove(path))
	if err := s.Ping(t.Context()); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("Ping after the database was deleted = %v, want ErrDamaged saying it was deleted", err)
	}
	if _, err := s.Append(t.Context(), batchOf("x", 1, 1), AppendOptions{}); !errors.Is(err, ErrDamaged) {
		t.Errorf("Append after Ping saw the damage = %v, want ErrDamaged", err)
	}
}

// garble overwrites every page of the database file but the first (the
// header and the schema) with random bytes.
func garble(t *testing.T, path string) {
	t.Helper()
	size := sizeOf(t, path)
	if size <= 4096 {
		t.Fatalf("database file is %d bytes: nothing beyond the first page to garble", size)
	}
	junk := make([]byte, size-4096)
	rand.Read(junk)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	must(t, err)
	defer f.Close()
	_, err = f.WriteAt(junk, 4096)
	must(t, err)
}

// storeWithEvents creates a database at a new path with n events over a few
// topics, closes it (which leaves everything in the database file) and
// returns the path.
func storeWithEvents(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	s, err := OpenSQLite(path, nil)
	must(t, err)
	events := make([]Event, n)
	for i := range events {
		events[i] = Event{Topic: "topic-" + strconv.Itoa(i%5), EventID: strconv.Itoa(i), Timestamp: time.Unix(1, 0)}
	}
	_, err = s.Append(t.Context(), events, AppendOptions{})
	must(t, err)
	must(t, s.Close())
	return path
}

// TestOpenSQLiteRefusesCorruptDatabase garbles the body of a database that
// keeps a valid header: opening it fails, saying it is corrupt.
func TestOpenSQLiteRefusesCorruptDatabase(t *testing.T) {
	t.Parallel()
	path := storeWithEvents(t, 3000)
	garble(t, path)
	s, err := OpenSQLite(path, nil)
	if err == nil {
		s.Close()
		t.Fatal("OpenSQLite on a garbled database succeeded")
	}
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "corrupt") || strings.Count(err.Error(), "eventagg:") != 1 {
		t.Errorf("OpenSQLite on a garbled database = %v; want ErrDamaged, saying it is corrupt, with one eventagg: prefix", err)
	}
}

// TestSQLiteCorruptionIsSticky garbles the database under an open store:
// once a read sees the corruption, every write is refused with ErrDamaged
// and Ping reports it.
func TestSQLiteCorruptionIsSticky(t *testing.T) {
	t.Parallel()
	path := storeWithEvents(t, 3000)
	var logs logBuffer
	s, err := OpenSQLite(path, &SQLiteOptions{Logger: logs.logger()})
	must(t, err)
	defer s.Close()
	garble(t, path)
	if _, err := s.Stats(t.Context()); !errors.Is(err, ErrDamaged) || !errors.Is(err, sqlite3.CORRUPT) {
		t.Fatalf("Stats on a garbled database = %v, want ErrDamaged wrapping sqlite3.CORRUPT", err)
	}
	for i := range 2 {
		if _, err := s.Append(t.Context(), batchOf("new"+strconv.Itoa(i), 1, 1), AppendOptions{}); !errors.Is(err, ErrDamaged) {
			t.Errorf("Append %d after a read saw corruption = %v, want ErrDamaged", i, err)
		}
	}
	if err := s.Ping(t.Context()); !errors.Is(err, ErrDamaged) {
		t.Errorf("Ping = %v, want ErrDamaged", err)
	}
	if !strings.Contains(logs.String(), "corrupt") {
		t.Errorf("the corruption was not logged:\n%s", logs.String())
	}
}

// TestSQLiteFullDiskAtOpen opens an existing database on a full file
// system: it serves reads, refuses writes with ErrFull, keeps other
// processes out, and writes once space is freed.
func TestSQLiteFullDiskAtOpen(t *testing.T) {
	t.Parallel()
	dir := tmpfs.Mount(t, 4<<20)
	path := filepath.Join(dir, "events.db")
	s, err := OpenSQLite(path, nil)
	must(t, err)
	_, err = s.Append(t.Context(), batchOf("before", 200, 100), AppendOptions{})
	must(t, err)
	must(t, s.Close())

	free := tmpfs.Fill(t, dir)
	if _, err := OpenSQLite(filepath.Join(dir, "new.db"), nil); !errors.Is(err, ErrFull) || strings.Count(err.Error(), "eventagg:") != 1 {
		t.Errorf("OpenSQLite of a new database on a full disk = %v, want ErrFull", err)
	}
	var logs logBuffer
	s, err = OpenSQLite(path, &SQLiteOptions{Logger: logs.logger()})
	if err != nil {
		t.Fatalf("OpenSQLite of an existing database on a full disk = %v, want it open for reads", err)
	}
	defer s.Close()
	if !strings.Contains(logs.String(), "disk is full") {
		t.Errorf("opening on a full disk was not logged:\n%s", logs.String())
	}
	st, err := s.Stats(t.Context())
	if err != nil || st.UniqueProcessed != 200 {
		t.Fatalf("Stats on a full disk = %+v, %v; want 200 events", st.Counts, err)
	}
	n := 0
	for _, err := range s.Events(t.Context(), Query{}) {
		must(t, err)
		n++
	}
	if n != 200 {
		t.Errorf("listed %d events on a full disk, want 200", n)
	}
	must(t, s.Ping(t.Context()))
	batch := batchOf("after", 100, 1000)
	if _, err := s.Append(t.Context(), batch, AppendOptions{}); !errors.Is(err, ErrFull) {
		t.Fatalf("Append on a full disk = %v, want ErrFull", err)
	}
	if other, err := OpenSQLite(path, &SQLiteOptions{BusyTimeout: 10 * time.Millisecond}); err == nil {
		other.Close()
		t.Error("a second store opened the file held in exclusive mode")
	}

	free()
	if outcomes, err := s.Append(t.Context(), batch, AppendOptions{}); err != nil || outcomes[0].Status != Stored {
		t.Fatalf("Append after space was freed = %v, %v; want it stored", outcomes, err)
	}
	st, err = s.Stats(t.Context())
	if err != nil || st.UniqueProcessed != 300 || st.Received != 300 {
		t.Errorf("Stats after space was freed = %+v, %v; want 300 events, nothing counted of the refused write", st.Counts, err)
	}
	must(t, s.Close())
	s, err = OpenSQLite(path, nil)
	must(t, err)
	defer s.Close()
	if s.exclusive {
		t.Error("reopened after space was freed, the store is still in exclusive mode")
	}
}

// TestSQLiteFileChecksRaceCommits checks the files over and over while the
// writer commits: a commit that lands between reading the log's size and the
// size the store expects must not pass for a truncation.
func TestSQLiteFileChecksRaceCommits(t *testing.T) {
	t.Parallel()
	s, _ := openSQLiteForTest(t, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 300 {
			if _, err := s.Append(t.Context(), batchOf("b"+strconv.Itoa(i), 3, 10), AppendOptions{}); err != nil {
				t.Errorf("Append %d: %v", i, err)
				return
			}
		}
	}()
	for checking := true; checking; {
		select {
		case <-done:
			checking = false
		default:
		}
		if err := s.checkFiles(); err != nil {
			t.Fatalf("checkFiles while commits go on = %v, want nil", err)
		}
	}
}
