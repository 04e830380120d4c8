package eventagg

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventagg/eventagg/internal/tmpfs"
	"github.com/ncruces/go-sqlite3"
)

// switchStore fails every Append with errInjected while fail is set.
type switchStore struct {
	Store
	fail atomic.Bool
}

var errInjected = errors.New("injected store failure")

func (s *switchStore) Append(ctx context.Context, events []Event, opts AppendOptions) ([]Outcome, error) {
	if s.fail.Load() {
		return nil, errInjected
	}
	return s.Store.Append(ctx, events, opts)
}

// rawConn opens a connection of its own to the SQLite file at path, as
// another process would.
func rawConn(t *testing.T, path string) *sqlite3.Conn {
	t.Helper()
	c, err := sqlite3.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustExec(t *testing.T, c *sqlite3.Conn, sql string) {
	t.Helper()
	if err := c.Exec(sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func openSQLiteForTest(t *testing.T, opts *SQLiteOptions) (*SQLiteStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	s, err := OpenSQLite(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// TestPublishSurvivesStoreFaults puts the store in a fault, checks that
// Publish fails with ErrStore wrapping the cause and that nothing is
// counted while the store still serves reads, then clears the fault and
// checks that the same batch is stored, exactly once.
func TestPublishSurvivesStoreFaults(t *testing.T) {
	big := json.RawMessage(`"` + strings.Repeat("x", 64<<10) + `"`) // needs new pages
	tests := []struct {
		name  string
		cause error
		// open returns a store and functions that start and clear the fault.
		open func(t *testing.T) (Store, func(), func())
	}{
		{"FaultyStore", errInjected, func(t *testing.T) (Store, func(), func()) {
			s := &switchStore{Store: NewMemoryStore()}
			return s, func() { s.fail.Store(true) }, func() { s.fail.Store(false) }
		}},
		{"SizeCapReached", ErrFull, func(t *testing.T) (Store, func(), func()) {
			// The database may not grow past 256 KiB. Another program fills it
			// (the disk fills up), then frees the space.
			s, path := openSQLiteForTest(t, &SQLiteOptions{MaxSizeBytes: 256 << 10})
			other := rawConn(t, path)
			return s, func() {
					mustExec(t, other, `CREATE TABLE filler (b BLOB); INSERT INTO filler VALUES (zeroblob(300 * 1024))`)
				}, func() {
					mustExec(t, other, `DROP TABLE filler`)
				}
		}},
		{"FullFileSystem", ErrFull, func(t *testing.T) (Store, func(), func()) {
			// A real full disk: a small tmpfs, filled by another file.
			dir := tmpfs.Mount(t, 4<<20)
			s, err := OpenSQLite(filepath.Join(dir, "events.db"), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			var free func()
			return s, func() { free = tmpfs.Fill(t, dir) }, func() { free() }
		}},
		{"Locked", sqlite3.BUSY, func(t *testing.T) (Store, func(), func()) {
			// Another process holds the write lock longer than the store waits.
			s, path := openSQLiteForTest(t, &SQLiteOptions{BusyTimeout: 50 * time.Millisecond})
			other := rawConn(t, path)
			return s, func() { mustExec(t, other, `BEGIN EXCLUSIVE`) }, func() { mustExec(t, other, `ROLLBACK`) }
		}},
		{"ReadOnly", sqlite3.READONLY, func(t *testing.T) (Store, func(), func()) {
			// What SQLite answers when the database cannot be written (a file
			// system remounted read-only): chmod cannot show it, since root
			// writes anyway and open descriptors keep their mode, so the
			// writer connection is made query-only, which takes the same path.
			s, _ := openSQLiteForTest(t, nil)
			set := func(on int) func() {
				return func() {
					s.mu.Lock()
					defer s.mu.Unlock()
					mustExec(t, s.w, `PRAGMA query_only=`+strconv.Itoa(on))
				}
			}
			return s, set(1), set(0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			store, fault, clear := tt.open(t)
			agg, err := New(store, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer agg.Close()
			ctx := t.Context()
			if _, err := agg.Publish(ctx, Event{Topic: "t", EventID: "before"}); err != nil {
				t.Fatalf("Publish before the fault: %v", err)
			}
			batch := []Event{{Topic: "t", EventID: "big", Payload: big}, {Topic: "new-topic", EventID: "1"}, {Topic: "t", EventID: "before"}}

			fault()
			for range 2 {
				res, err := agg.Publish(ctx, batch...)
				if !errors.Is(err, ErrStore) || !errors.Is(err, tt.cause) {
					t.Fatalf("Publish during the fault = %+v, %v; want ErrStore wrapping %v", res, err, tt.cause)
				}
			}
			st, err := agg.Stats(ctx)
			if err != nil {
				t.Fatalf("Stats during the fault: %v", err)
			}
			if st.Received != 1 || st.UniqueProcessed != 1 || len(st.Topics) != 1 {
				t.Errorf("during the fault Stats() = %+v; want only the first event counted", st)
			}
			if err := agg.Ping(ctx); err != nil {
				t.Errorf("Ping during a write fault = %v, want nil: reads still work", err)
			}

			clear()
			res, err := agg.Publish(ctx, batch...)
			if err != nil || res.Processed != 2 || res.Duplicates != 1 {
				t.Fatalf("Publish after the fault cleared = %+v, %v; want 2 stored, 1 duplicate", res, err)
			}
			st, err = agg.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := (Counts{Received: 4, UniqueProcessed: 3, DuplicateDropped: 1, Stored: 3}); st.Counts != want {
				t.Errorf("after recovery Stats() = %+v, want %+v", st.Counts, want)
			}
			n := 0
			for _, err := range agg.Events(ctx, Query{}) {
				if err != nil {
					t.Fatal(err)
				}
				n++
			}
			if n != 3 {
				t.Errorf("%d events stored after recovery, want 3", n)
			}
		})
	}
}

// TestSQLiteMaxSizeBytes fills a capped database with events until the cap
// refuses one, then checks the counters, that reopening with the same cap
// still refuses, and that a larger cap lets the database grow.
func TestSQLiteMaxSizeBytes(t *testing.T) {
	const capBytes = 128 << 10
	s, path := openSQLiteForTest(t, &SQLiteOptions{MaxSizeBytes: capBytes})
	payload := json.RawMessage(`"` + strings.Repeat("p", 4000) + `"`)
	stored := 0
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = s.Append(t.Context(), []Event{{Topic: "t", EventID: strconv.Itoa(i), Timestamp: time.Now(), Payload: payload}}, AppendOptions{})
		if err == nil {
			stored++
		}
	}
	if !errors.Is(err, sqlite3.FULL) || !errors.Is(err, ErrFull) {
		t.Fatalf("after %d events Append = %v, want an error matching ErrFull and sqlite3.FULL", stored, err)
	}
	if stored == 0 || stored*4000 > capBytes {
		t.Errorf("%d events of 4000 bytes fit under a cap of %d bytes", stored, capBytes)
	}
	st, err := s.Stats(t.Context())
	if err != nil || st.UniqueProcessed != int64(stored) || st.Received != int64(stored) {
		t.Errorf("Stats() = %+v, %v; want %d events counted", st.Counts, err, stored)
	}
	s.Close()

	for _, tt := range []struct {
		cap     int64
		wantErr bool
	}{{capBytes, true}, {2 * capBytes, false}} {
		s, err := OpenSQLite(path, &SQLiteOptions{MaxSizeBytes: tt.cap})
		if err != nil {
			t.Fatalf("OpenSQLite with a cap of %d: %v", tt.cap, err)
		}
		_, err = s.Append(t.Context(), []Event{{Topic: "t", EventID: "more", Timestamp: time.Now(), Payload: payload}}, AppendOptions{})
		if gotErr := errors.Is(err, sqlite3.FULL); gotErr != tt.wantErr {
			t.Errorf("with a cap of %d bytes Append = %v; want full: %v", tt.cap, err, tt.wantErr)
		}
		s.Close()
	}
}
