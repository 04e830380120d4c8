package eventagg_test

import (
	"path/filepath"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/storetest"
)

func TestMemoryStoreConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{Open: func(testing.TB) eventagg.Store { return eventagg.NewMemoryStore() }})
}

func TestSQLiteStoreConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{Open: newSQLite, Reopen: reopenSQLite})
}

func BenchmarkMemoryStoreAppend(b *testing.B) {
	storetest.Bench(b, func(testing.TB) eventagg.Store { return eventagg.NewMemoryStore() })
}

func BenchmarkSQLiteStoreAppend(b *testing.B) {
	storetest.Bench(b, func(tb testing.TB) eventagg.Store { return newSQLite(tb) })
}

// MustOpenSQLite opens the SQLite store at path and closes it when tb ends.
func MustOpenSQLite(tb testing.TB, path string, opts *eventagg.SQLiteOptions) *eventagg.SQLiteStore {
	tb.Helper()
	s, err := eventagg.OpenSQLite(path, opts)
	if err != nil {
		tb.Fatalf("OpenSQLite(%q) error: %v", path, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("SQLiteStore.Close() error: %v", err)
		}
	})
	return s
}

func newSQLite(tb testing.TB) eventagg.Store {
	return MustOpenSQLite(tb, filepath.Join(tb.TempDir(), "events.db"), nil)
}

func reopenSQLite(tb testing.TB, s eventagg.Store) eventagg.Store {
	tb.Helper()
	path := s.(*eventagg.SQLiteStore).Path()
	if err := s.Close(); err != nil {
		tb.Fatalf("Close() before reopen: %v", err)
	}
	return MustOpenSQLite(tb, path, nil)
}
