package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

// want is what every run prints: the first send stores the batch, the
// resends store nothing, the changed event is a conflict, and the counters
// agree.
const want = `send 1: processed 5, duplicates dropped 0, conflicts 0
send 2: processed 0, duplicates dropped 5, conflicts 0
send 3: processed 0, duplicates dropped 5, conflicts 0
send 4, event 2 changed: processed 0, duplicates dropped 5, conflicts 1
  event 2: conflict: dropped, the first copy is kept
stored 5 new events for 20 sent (conflicts: 1)
`

func TestInProcess(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	if err := run(t.Context(), "", &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", out.String(), want)
	}
}

// newServer returns the URL of a server over agg, for the test's length.
func newServer(t *testing.T, agg *eventagg.Aggregator) string {
	t.Helper()
	srv := httptest.NewServer(httpapi.NewHandler(agg, nil))
	t.Cleanup(srv.Close)
	return srv.URL
}

// newAggregator returns an Aggregator over a memory store, for the test's length.
func newAggregator(t *testing.T, opts *eventagg.Options) *eventagg.Aggregator {
	t.Helper()
	store := eventagg.NewMemoryStore()
	t.Cleanup(func() { store.Close() })
	agg, err := eventagg.New(store, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agg.Close() })
	return agg
}

func TestGivenServer(t *testing.T) {
	t.Parallel()
	agg := newAggregator(t, nil)
	url := newServer(t, agg)

	// Two runs against one server: each sends fresh ids, so each stores its
	// own batch once, whatever the server held before.
	for i := range 2 {
		var out strings.Builder
		if err := run(t.Context(), url, &out); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Errorf("run %d printed:\n%s\nwant:\n%s", i+1, out.String(), want)
		}
	}

	// The server agrees: 10 events stored, each sent four times, the
	// changed ones dropped as conflicts.
	stats, err := agg.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (eventagg.Counts{Received: 40, UniqueProcessed: 10, DuplicateDropped: 30, Conflicts: 2, Stored: 10}); stats.Counts != want {
		t.Errorf("server counters %+v, want %+v", stats.Counts, want)
	}
	keys := map[eventagg.Key]bool{}
	for e, err := range agg.Events(t.Context(), eventagg.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Topic != "examples" || e.Source != "publisher" || keys[e.Key()] || strings.Contains(string(e.Payload), "changed") {
			t.Errorf("stored %+v: want topic examples, source publisher, the first copy, once", e)
		}
		keys[e.Key()] = true
	}
	if len(keys) != 10 {
		t.Errorf("%d events stored, want 10", len(keys))
	}
}

// TestSameCodeEitherWay runs the producer against an Aggregator that rejects
// conflicts, in process and through a Client to a server: it prints the
// same, since the Client's errors are the Aggregator's.
func TestSameCodeEitherWay(t *testing.T) {
	t.Parallel()
	const want = `send 1: processed 5, duplicates dropped 0, conflicts 0
send 2: processed 0, duplicates dropped 5, conflicts 0
send 3: processed 0, duplicates dropped 5, conflicts 0
send 4, event 2 changed: refused: event 2 conflicts with the stored copy of its id
stored 5 new events for 15 sent (conflicts: 0)
`
	opts := &eventagg.Options{RejectConflicts: true}
	local := newAggregator(t, opts)
	remote := newAggregator(t, opts)
	client, err := httpapi.NewClient(newServer(t, remote), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]struct {
		pub   eventagg.Publisher
		stats func(context.Context) (eventagg.Stats, error)
	}{
		"Aggregator": {local, local.Stats},
		"Client":     {client, remote.Stats},
	} {
		var out strings.Builder
		counts := func(ctx context.Context) (eventagg.Counts, error) {
			st, err := p.stats(ctx)
			return st.Counts, err
		}
		if err := publish(t.Context(), p.pub, counts, &out); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if out.String() != want {
			t.Errorf("through the %s printed:\n%s\nwant:\n%s", name, out.String(), want)
		}
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
