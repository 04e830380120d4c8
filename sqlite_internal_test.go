package eventagg

import (
	"path/filepath"
	"testing"
)

func TestSQLitePragmas(t *testing.T) {
	for _, tt := range []struct {
		sync Sync
		want int64 // PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL
	}{{SyncFull, 2}, {SyncNormal, 1}, {SyncOff, 0}} {
		s, err := OpenSQLite(filepath.Join(t.TempDir(), "events.db"), &SQLiteOptions{Sync: tt.sync})
		if err != nil {
			t.Fatal(err)
		}
		got, err := pragmaInt(s.w, "synchronous")
		if err != nil || got != tt.want {
			t.Errorf("Sync %d: PRAGMA synchronous = %d, %v; want %d", tt.sync, got, err, tt.want)
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
