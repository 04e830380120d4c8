package eventagg_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/google/go-cmp/cmp"
)

// TestSQLiteMigratesVersion1 opens testdata/sqlite-v1.db, a database written
// by eventagg before conflicts were detected (schema version 1: orders o-1
// with a payload, o-2 without, payments p-1 with a 10 KB payload; o-1 and
// o-2 each sent once more): the store migrates it, keeps its events and
// counters, and compares later copies with the old events' payloads.
func TestSQLiteMigratesVersion1(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("testdata/sqlite-v1.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "events.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s := MustOpenSQLite(t, path, nil)
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]eventagg.Counts{
		"orders":   {Received: 4, UniqueProcessed: 2, DuplicateDropped: 2, Stored: 2},
		"payments": {Received: 1, UniqueProcessed: 1, Stored: 1},
	}
	if diff := cmp.Diff(want, st.Topics); diff != "" {
		t.Errorf("counters after the migration (-want +got):\n%s", diff)
	}
	var ids []string
	for e, err := range s.Events(t.Context(), eventagg.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.Topic+"/"+e.EventID)
		if e.EventID == "o-1" && (string(e.Payload) != `{"total":42}` || e.Source != "shop" || !e.Timestamp.Equal(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))) {
			t.Errorf("o-1 after the migration = %+v", e)
		}
	}
	if diff := cmp.Diff([]string{"orders/o-1", "orders/o-2", "payments/p-1"}, ids); diff != "" {
		t.Errorf("events after the migration (-want +got):\n%s", diff)
	}

	agg := MustNew(t, s, nil)
	big := json.RawMessage(`"` + strings.Repeat("x", 10000) + `"`)
	res, err := agg.Publish(t.Context(),
		eventagg.Event{Topic: "orders", EventID: "o-1", Payload: json.RawMessage(`{"total":42}`)}, // as stored
		eventagg.Event{Topic: "orders", EventID: "o-2"},                                           // as stored: no payload
		eventagg.Event{Topic: "payments", EventID: "p-1", Payload: big},                           // as stored
		eventagg.Event{Topic: "orders", EventID: "o-1", Payload: json.RawMessage(`{"total":43}`)},
		eventagg.Event{Topic: "orders", EventID: "o-2", Payload: json.RawMessage(`{}`)},
		eventagg.Event{Topic: "orders", EventID: "o-3", Payload: json.RawMessage(`1`)},
	)
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(t, res); got != "1 stored, 5 dropped, 2 conflicts: DDDCCS" {
		t.Errorf("Publish on the migrated database = %s", got)
	}
}
