package httpapi_test

import (
	"context"
	"iter"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

// An Aggregator is what a Handler usually serves.
var _ httpapi.Backend = (*eventagg.Aggregator)(nil)

// readFailStore fails every read; writes work.
type readFailStore struct{ eventagg.Store }

func (readFailStore) Events(context.Context, eventagg.Query) iter.Seq2[eventagg.Event, error] {
	return func(yield func(eventagg.Event, error) bool) { yield(eventagg.Event{}, errDiskGone) }
}

func (readFailStore) Stats(context.Context) (eventagg.Stats, error) {
	return eventagg.Stats{}, errDiskGone
}

// TestReadsOfAFailingStoreAnswer503 reads from a store that fails: every
// read answers as a publish to it would, 503 store_unavailable without the
// store's error, and /metrics still serves what it has.
func TestReadsOfAFailingStoreAnswer503(t *testing.T) {
	s := newServer(t, readFailStore{eventagg.NewMemoryStore()}, nil, nil)
	for _, target := range []string{"/events", "/events?limit=5", "/stats"} {
		resp := s.do(t, "GET", target, "")
		var body httpapi.ErrorResponse
		resp.decode(t, &body)
		if resp.status != 503 || body.Code != httpapi.CodeStoreUnavailable || resp.header.Get("Retry-After") == "" ||
			strings.Contains(string(resp.body), "secret") {
			t.Errorf("GET %s = %d %s; want 503 store_unavailable with Retry-After, hiding the store's error", target, resp.status, resp.body)
		}
	}
	resp := s.do(t, "GET", "/metrics", "")
	got := parseProm(t, string(resp.body))
	if _, ok := got["eventagg_events_received_total"]; resp.status != 200 || ok {
		t.Errorf("GET /metrics = %d, event counters present %v; want 200 without them", resp.status, ok)
	}
	if _, ok := got["eventagg_queue_depth"]; !ok {
		t.Errorf("GET /metrics lacks what it has without the store: %s", resp.body)
	}
}

// countingBackend is a Backend that wraps another, as an application that
// adds its own accounting would.
type countingBackend struct {
	httpapi.Backend
	published atomic.Int64
}

func (b *countingBackend) Publish(ctx context.Context, events ...eventagg.Event) (eventagg.Result, error) {
	res, err := b.Backend.Publish(ctx, events...)
	if err == nil {
		b.published.Add(int64(res.Processed))
	}
	return res, err
}

// TestHandlerServesAnyBackend serves a Backend other than an Aggregator.
func TestHandlerServesAnyBackend(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	b := &countingBackend{Backend: s.agg}
	s.h = httpapi.NewHandler(b, nil)
	resp := s.do(t, "POST", "/publish", `[{"topic":"a","event_id":"1"},{"topic":"a","event_id":"2"},{"topic":"a","event_id":"1"}]`)
	if resp.status != 200 || b.published.Load() != 2 {
		t.Errorf("POST /publish through the wrapper = %d %s, counted %d; want 200 and 2 counted", resp.status, resp.body, b.published.Load())
	}
	var st httpapi.StatsResponse
	s.do(t, "GET", "/stats", "").decode(t, &st)
	if st.UniqueProcessed != 2 || st.DuplicateDropped != 1 {
		t.Errorf("GET /stats through the wrapper = %+v", st.Counts)
	}
}
