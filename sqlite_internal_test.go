package eventagg

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSQLitePragmas(t *testing.T) {
	for _, tt := range []struct {
		sync   Sync
		want   int64 // PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL
		syncer bool  // the store fsyncs the WAL itself
	}{{SyncFull, 1, true}, {SyncNormal, 1, false}, {SyncOff, 0, false}} {
		s, err := OpenSQLite(filepath.Join(t.TempDir(), "events.db"), &SQLiteOptions{Sync: tt.sync})
		if err != nil {
			t.Fatal(err)
		}
		got, err := pragmaInt(s.w, "synchronous")
		if err != nil || got != tt.want {
			t.Errorf("Sync %d: PRAGMA synchronous = %d, %v; want %d", tt.sync, got, err, tt.want)
		}
		if (s.syncer != nil) != tt.syncer {
			t.Errorf("Sync %d: store fsyncs the WAL itself = %v, want %v", tt.sync, s.syncer != nil, tt.syncer)
		}
		mode, err := pragmaText(s.w, "journal_mode")
		if err != nil || mode != "wal" {
			t.Errorf("PRAGMA journal_mode = %q, %v; want wal", mode, err)
		}
		version, err := pragmaInt(s.w, "user_version")
		if err != nil || version != sqliteSchemaVersion {
			t.Errorf("PRAGMA user_version = %d, %v; want %d", version, err, sqliteSchemaVersion)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close() error: %v", err)
		}
	}
}

func TestSQLiteRecoversFromDriverPanic(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "events.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ok := []Event{{Topic: "t", EventID: "ok", Timestamp: time.Unix(1, 0)}}
	if _, err := s.Append(t.Context(), ok); err != nil {
		t.Fatal(err)
	}
	// Starve the writer's SQLite heap: the driver panics with "out of memory".
	if err := s.w.Exec(`PRAGMA hard_heap_limit=1000000`); err != nil {
		t.Fatal(err)
	}
	big := []Event{{Topic: "t", EventID: "big", Timestamp: time.Unix(1, 0),
		Payload: json.RawMessage(`"` + strings.Repeat("x", 4<<20) + `"`)}}
	if _, err := s.Append(t.Context(), big); err == nil || !strings.Contains(err.Error(), "out of memory") {
		t.Fatalf("Append over the heap limit error = %v, want out of memory", err)
	}
	// A new writer takes over: the same batch now goes through, and nothing
	// of the failed one was stored.
	isNew, err := s.Append(t.Context(), append(big, ok...))
	if err != nil || !isNew[0] || isNew[1] {
		t.Fatalf("Append after the panic = %v, %v; want [true false]", isNew, err)
	}
	st, err := s.Stats(t.Context())
	if err != nil || st.Received != 3 || st.UniqueProcessed != 2 {
		t.Errorf("Stats() = %+v, %v; want received 3, unique 2", st.Counts, err)
	}
}

// gatedSync replaces the store's fsync with one that reports each call on
// started and waits for the test to release it.
func gatedSync(t *testing.T, s *SQLiteStore) (started chan struct{}, release chan error) {
	t.Helper()
	started, release = make(chan struct{}), make(chan error)
	real := s.syncer.fsync
	s.syncer.fsync = func(f *os.File) error {
		started <- struct{}{}
		if err := <-release; err != nil {
			return err
		}
		return real(f)
	}
	return started, release
}

func event(id string) []Event { return []Event{{Topic: "t", EventID: id, Timestamp: time.Unix(1, 0)}} }

func TestSQLiteAcknowledgesOnlyAfterFsync(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "events.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	started, release := gatedSync(t, s)
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(t.Context(), event("first"))
		done <- err
	}()
	<-started // the first commit's fsync is under way, and held
	// Meanwhile more commits go through: the writer does not wait for the fsync.
	var durable []func() error
	for i := range 3 {
		isNew, d, err := s.appendNoWait(t.Context(), event("n"+strconv.Itoa(i)))
		if err != nil || !isNew[0] {
			t.Fatalf("appendNoWait while an fsync is held = %v, %v", isNew, err)
		}
		durable = append(durable, d)
	}
	select {
	case err := <-done:
		t.Fatalf("Append returned (%v) before its fsync completed", err)
	default:
	}
	release <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-started // one more fsync, covering the three later commits
	release <- nil
	for _, d := range durable {
		if err := d(); err != nil {
			t.Fatal(err)
		}
	}
	// Close needs no third fsync: everything is synced. Unhook the gate anyway.
	s.syncer.mu.Lock()
	s.syncer.fsync = fdatasync
	s.syncer.mu.Unlock()
}

func TestSQLiteFsyncErrorIsSticky(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "events.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	started, release := gatedSync(t, s)
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(t.Context(), event("1"))
		done <- err
	}()
	<-started
	release <- errors.New("EIO")
	if err := <-done; err == nil || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("Append whose fsync failed = %v, want the fsync error", err)
	}
	if _, err := s.Append(t.Context(), event("2")); err == nil {
		t.Error("Append after a failed fsync succeeded; want the sticky error")
	}
	if err := s.Ping(t.Context()); err == nil {
		t.Error("Ping after a failed fsync = nil, want the fsync error")
	}
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "EIO") {
		t.Errorf("Close() = %v, want the fsync error", err)
	}
}
