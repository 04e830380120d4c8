package eventagg

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
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
	if _, err := s.Append(t.Context(), ok, AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	// Starve the writer's SQLite heap: the driver panics with "out of memory".
	if err := s.w.Exec(`PRAGMA hard_heap_limit=1000000`); err != nil {
		t.Fatal(err)
	}
	big := []Event{{Topic: "t", EventID: "big", Timestamp: time.Unix(1, 0),
		Payload: json.RawMessage(`"` + strings.Repeat("x", 4<<20) + `"`)}}
	if _, err := s.Append(t.Context(), big, AppendOptions{}); err == nil || !strings.Contains(err.Error(), "out of memory") {
		t.Fatalf("Append over the heap limit error = %v, want out of memory", err)
	}
	// A new writer takes over: the same batch now goes through, and nothing
	// of the failed one was stored.
	outcomes, err := s.Append(t.Context(), append(big, ok...), AppendOptions{})
	if err != nil || outcomes[0].Status != Stored || outcomes[1].Status != Duplicate {
		t.Fatalf("Append after the panic = %v, %v; want stored, duplicate", outcomes, err)
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
		_, err := s.Append(t.Context(), event("first"), AppendOptions{})
		done <- err
	}()
	<-started // the first commit's fsync is under way, and held
	// Meanwhile more commits go through: the writer does not wait for the fsync.
	var durable []func() error
	for i := range 3 {
		outcomes, d, err := s.AppendAsync(t.Context(), event("n"+strconv.Itoa(i)), AppendOptions{})
		if err != nil || outcomes[0].Status != Stored {
			t.Fatalf("AppendAsync while an fsync is held = %v, %v", outcomes, err)
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
		_, err := s.Append(t.Context(), event("1"), AppendOptions{})
		done <- err
	}()
	<-started
	release <- errors.New("EIO")
	if err := <-done; err == nil || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("Append whose fsync failed = %v, want the fsync error", err)
	}
	if _, err := s.Append(t.Context(), event("2"), AppendOptions{}); err == nil {
		t.Error("Append after a failed fsync succeeded; want the sticky error")
	}
	if err := s.Ping(t.Context()); err == nil {
		t.Error("Ping after a failed fsync = nil, want the fsync error")
	}
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "EIO") {
		t.Errorf("Close() = %v, want the fsync error", err)
	}
}

// countingStore is a decorator, as a user would write one to add metrics:
// it keeps the inner store's pipelining by embedding Pipeline(inner).
type countingStore struct {
	Pipeliner
	appends atomic.Int64
	calls   chan struct{} // receives at each AppendAsync
}

func (c *countingStore) AppendAsync(ctx context.Context, events []Event, opts AppendOptions) ([]Outcome, func() error, error) {
	c.appends.Add(1)
	c.calls <- struct{}{}
	return c.Pipeliner.AppendAsync(ctx, events, opts)
}

// TestWrappingStoreKeepsPipelining holds the fsync of a first batch, under
// an Aggregator on a decorated SQLiteStore: a second batch is committed
// meanwhile (the overlapped fsync), and both are answered once durable.
func TestWrappingStoreKeepsPipelining(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "events.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	started, release := gatedSync(t, s)
	store := &countingStore{Pipeliner: Pipeline(s), calls: make(chan struct{}, 2)}
	agg, err := New(store, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer agg.Close()
	first := make(chan error, 1)
	go func() {
		_, err := agg.Publish(t.Context(), event("first")...)
		first <- err
	}()
	<-store.calls
	<-started // the first batch's fsync is held
	second := make(chan error, 1)
	go func() {
		_, err := agg.Publish(t.Context(), event("second")...)
		second <- err
	}()
	// The writer commits the second batch while the first is not durable:
	// its AppendAsync is called, and it waits for the next fsync.
	select {
	case <-store.calls:
	case err := <-first:
		t.Fatalf("the first Publish returned (%v) before its fsync", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the second batch was not committed while the first one's fsync was held: the decorator lost the pipelining")
	}
	if n := store.appends.Load(); n != 2 {
		t.Errorf("%d AppendAsync calls through the decorator, want 2", n)
	}
	release <- nil
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	<-started
	release <- nil
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	s.syncer.mu.Lock()
	s.syncer.fsync = fdatasync
	s.syncer.mu.Unlock()
}

// TestSQLiteKeyCacheAcrossStores stores a key through one store and resends
// it through another on the same file, whose cache never saw it: the
// outcomes come from the stored copy, and then from each store's cache.
func TestSQLiteKeyCacheAcrossStores(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	a, err := OpenSQLite(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := OpenSQLite(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	first := Event{Topic: "t", EventID: "k", Timestamp: time.Unix(1, 0), Payload: []byte(`1`)}
	other := first
	other.Payload = []byte(`2`)
	for _, step := range []struct {
		name  string
		s     *SQLiteStore
		e     Event
		want  Status
		known bool // the store's cache knows the key before the step
	}{
		{"stored through a", a, first, Stored, false},
		{"a resends it", a, first, Duplicate, true},
		{"b resends it", b, first, Duplicate, false},
		{"b resends it again", b, first, Duplicate, true},
		{"b changes it", b, other, Conflict, true},
		{"a changes it", a, other, Conflict, true},
	} {
		_, known := step.s.keys.get(step.e.Key())
		if known != step.known {
			t.Errorf("%s: the cache knows the key: %v, want %v", step.name, known, step.known)
		}
		outcomes, err := step.s.Append(t.Context(), []Event{step.e}, AppendOptions{})
		if err != nil || outcomes[0].Status != step.want {
			t.Fatalf("%s: Append = %v, %v; want %v", step.name, outcomes, err, step.want)
		}
	}
	st, err := a.Stats(t.Context())
	if want := (Counts{Received: 6, UniqueProcessed: 1, DuplicateDropped: 5, Conflicts: 2, Stored: 1}); err != nil || st.Counts != want {
		t.Errorf("Stats() = %+v, %v; want %+v", st.Counts, err, want)
	}
}

// TestSQLiteKeyCacheForgetsNothingUncommitted: a batch that fails leaves no
// key in the cache, so that a later copy is judged from the database.
func TestSQLiteKeyCacheForgetsNothingUncommitted(t *testing.T) {
	s, _ := openSQLiteForTest(t, nil)
	conflicting := []Event{
		{Topic: "t", EventID: "new", Timestamp: time.Unix(1, 0), Payload: []byte(`1`)},
		{Topic: "t", EventID: "new", Timestamp: time.Unix(1, 0), Payload: []byte(`2`)},
	}
	if _, err := s.Append(t.Context(), conflicting, AppendOptions{RejectConflicts: true}); !errors.Is(err, ErrConflict) {
		t.Fatalf("Append of a conflicting batch, rejecting conflicts = %v, want ErrConflict", err)
	}
	if _, ok := s.keys.get(conflicting[0].Key()); ok {
		t.Error("the cache remembers a key of a batch that was rolled back")
	}
	outcomes, err := s.Append(t.Context(), conflicting[1:], AppendOptions{})
	if err != nil || outcomes[0].Status != Stored {
		t.Errorf("Append after the rollback = %v, %v; want the key stored", outcomes, err)
	}
}

func TestKeyCacheIsBounded(t *testing.T) {
	c := newKeyCache(2)
	for i := range 5 {
		c.add(Key{"t", strconv.Itoa(i)}, c.digest([]byte{byte(i)}))
	}
	if n := len(c.cur) + len(c.prev); n > 4 {
		t.Errorf("a cache of 2 entries per generation holds %d", n)
	}
	if d, ok := c.get(Key{"t", "4"}); !ok || d != c.digest([]byte{4}) {
		t.Error("the cache lost the last key added")
	}
	if _, ok := c.get(Key{"t", "0"}); ok {
		t.Error("the cache still holds the first of 5 keys")
	}
}
