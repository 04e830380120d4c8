package main

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

// want is what every run prints: the first send stores the batch, the
// resends store nothing, and the counters agree.
const want = `send 1: processed 5, duplicates dropped 0
send 2: processed 0, duplicates dropped 5
send 3: processed 0, duplicates dropped 5
stored 5 new events for 15 sent
`

func TestInProcessServer(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	if err := run(t.Context(), "", &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestGivenServer(t *testing.T) {
	t.Parallel()
	store := eventagg.NewMemoryStore()
	t.Cleanup(func() { store.Close() })
	agg, err := eventagg.New(store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agg.Close() })
	srv := httptest.NewServer(httpapi.NewHandler(agg, nil))
	t.Cleanup(srv.Close)

	// Two runs against one server: each sends fresh ids, so each stores its
	// own batch once, whatever the server held before.
	for i := range 2 {
		var out strings.Builder
		if err := run(t.Context(), srv.URL, &out); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Errorf("run %d printed:\n%s\nwant:\n%s", i+1, out.String(), want)
		}
	}

	// The server agrees: 10 events stored, each sent three times.
	stats, err := agg.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (eventagg.Counts{Received: 30, UniqueProcessed: 10, DuplicateDropped: 20}); stats.Counts != want {
		t.Errorf("server counters %+v, want %+v", stats.Counts, want)
	}
	keys := map[eventagg.Key]bool{}
	for e, err := range agg.Events(t.Context(), eventagg.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Topic != "examples" || e.Source != "publisher" || keys[e.Key()] {
			t.Errorf("stored %+v: want topic examples, source publisher, once", e)
		}
		keys[e.Key()] = true
	}
	if len(keys) != 10 {
		t.Errorf("%d events stored, want 10", len(keys))
	}
}

func TestBadURL(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	if err := run(t.Context(), "localhost:8080", &out); err == nil {
		t.Error("run with a URL without scheme: no error")
	}
	if out.Len() != 0 {
		t.Errorf("printed %q after a bad URL", out.String())
	}
}
