package eventagg_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/ncruces/go-sqlite3"
)

// rawExec runs sql on the SQLite file at path through a connection of its own.
func rawExec(t *testing.T, path, sql string) {
	t.Helper()
	c, err := sqlite3.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Exec(sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestOpenSQLiteRefusesOtherFiles(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		want    string
	}{
		{"NewerSchema", func(t *testing.T, path string) {
			s := MustOpenSQLite(t, path, nil)
			s.Close()
			rawExec(t, path, `PRAGMA user_version=99`)
		}, "schema version 99 is newer"},
		{"OtherApplication", func(t *testing.T, path string) {
			rawExec(t, path, `PRAGMA application_id=1234; CREATE TABLE x(a)`)
		}, "not an eventagg database"},
		{"ForeignTables", func(t *testing.T, path string) {
			rawExec(t, path, `CREATE TABLE users(id INTEGER PRIMARY KEY)`)
		}, "not an eventagg database"},
		{"NotSQLite", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "events.db")
			tt.prepare(t, path)
			s, err := eventagg.OpenSQLite(path, nil)
			if err == nil {
				s.Close()
				t.Fatalf("OpenSQLite() opened the file; want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("OpenSQLite() error = %q, want it to name the file and say %q", err, tt.want)
			}
		})
	}
}

func TestOpenSQLiteBadArguments(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		path string
		opts *eventagg.SQLiteOptions
	}{
		{"", nil},
		{":memory:", nil},
		{filepath.Join(dir, "missing", "dir", "events.db"), nil},
		{filepath.Join(dir, "events.db"), &eventagg.SQLiteOptions{Sync: eventagg.Sync(42)}},
	} {
		if s, err := eventagg.OpenSQLite(tt.path, tt.opts); err == nil {
			s.Close()
			t.Errorf("OpenSQLite(%q, %+v) error = nil, want an error", tt.path, tt.opts)
		}
	}
}

func TestOpenSQLiteEmptyFile(t *testing.T) {
	// A zero-length file is a valid, empty SQLite database: it gets the schema.
	path := filepath.Join(t.TempDir(), "events.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := MustOpenSQLite(t, path, nil)
	if _, err := s.Append(t.Context(), []eventagg.Event{event("t", "1")}, eventagg.AppendOptions{}); err != nil {
		t.Fatalf("Append() error: %v", err)
	}
}

func TestSQLiteStoresShareOneFile(t *testing.T) {
	// Two stores on one file stand for two processes: SQLite's locks serialise
	// their writes, and each key is stored once.
	path := filepath.Join(t.TempDir(), "events.db")
	stores := []*eventagg.SQLiteStore{MustOpenSQLite(t, path, nil), MustOpenSQLite(t, path, nil)}
	const rounds = 20
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		stored  int
		offered int
	)
	for _, s := range stores {
		wg.Go(func() {
			for i := range rounds {
				batch := []eventagg.Event{event("shared", strconv.Itoa(i)), event("t"+strconv.Itoa(i%3), strconv.Itoa(i))}
				outcomes, err := s.Append(context.Background(), batch, eventagg.AppendOptions{})
				if err != nil {
					t.Errorf("Append error: %v", err)
					return
				}
				mu.Lock()
				offered += len(batch)
				for _, o := range outcomes {
					if o.Status == eventagg.Stored {
						stored++
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for i, s := range stores {
		st, err := s.Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.Received != int64(offered) || st.UniqueProcessed != int64(stored) || st.UniqueProcessed != 2*rounds {
			t.Errorf("store %d Stats() = %+v; want received %d, unique %d (= %d)", i, st.Counts, offered, stored, 2*rounds)
		}
	}
}
