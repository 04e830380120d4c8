package eventagg

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
