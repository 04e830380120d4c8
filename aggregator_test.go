package eventagg_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func event(topic, id string) eventagg.Event {
	return eventagg.Event{Topic: topic, EventID: id, Timestamp: t0, Payload: json.RawMessage(`{"id":"` + id + `"}`)}
}

// MustNew returns an Aggregator over store, closed when tb ends.
func MustNew(tb testing.TB, store eventagg.Store, opts *eventagg.Options) *eventagg.Aggregator {
	tb.Helper()
	agg, err := eventagg.New(store, opts)
	if err != nil {
		tb.Fatalf("New() error: %v", err)
	}
	tb.Cleanup(func() { agg.Close() })
	return agg
}

func mustStats(t *testing.T, agg *eventagg.Aggregator) eventagg.Stats {
	t.Helper()
	st, err := agg.Stats(t.Context())
	if err != nil {
		t.Fatalf("Stats() error: %v", err)
	}
	return st
}

func TestPublishValidation(t *testing.T) {
	valid := event("orders", "1")
	with := func(f func(*eventagg.Event)) eventagg.Event {
		e := valid
		f(&e)
		return e
	}
	tests := []struct {
		name  string
		event eventagg.Event
		field string
	}{
		{"MissingTopic", with(func(e *eventagg.Event) { e.Topic = "" }), "topic"},
		{"LongTopic", with(func(e *eventagg.Event) { e.Topic = strings.Repeat("t", 256) }), "topic"},
		{"TopicNUL", with(func(e *eventagg.Event) { e.Topic = "a\x00b" }), "topic"},
		{"TopicNewline", with(func(e *eventagg.Event) { e.Topic = "a\nb" }), "topic"},
		{"TopicC1Control", with(func(e *eventagg.Event) { e.Topic = "a\u0085b" }), "topic"},
		{"TopicBadUTF8", with(func(e *eventagg.Event) { e.Topic = "a\xffb" }), "topic"},
		{"MissingEventID", with(func(e *eventagg.Event) { e.EventID = "" }), "event_id"},
		{"BlankEventID", with(func(e *eventagg.Event) { e.EventID = "  \u3000 " }), "event_id"},
		{"LongEventID", with(func(e *eventagg.Event) { e.EventID = strings.Repeat("é", 128) }), "event_id"},
		{"EventIDTab", with(func(e *eventagg.Event) { e.EventID = "a\tb" }), "event_id"},
		{"EventIDBadUTF8", with(func(e *eventagg.Event) { e.EventID = "\xc3" }), "event_id"},
		{"LongSource", with(func(e *eventagg.Event) { e.Source = strings.Repeat("s", 256) }), "source"},
		{"SourceControl", with(func(e *eventagg.Event) { e.Source = "\x1b[31m" }), "source"},
		{"PayloadNotJSON", with(func(e *eventagg.Event) { e.Payload = json.RawMessage(`{"a":`) }), "payload"},
		{"PayloadTrailingData", with(func(e *eventagg.Event) { e.Payload = json.RawMessage(`{} {}`) }), "payload"},
		{"TimestampTooEarly", with(func(e *eventagg.Event) { e.Timestamp = time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC) }), "timestamp"},
		{"TimestampTooLate", with(func(e *eventagg.Event) { e.Timestamp = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }), "timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			agg := MustNew(t, eventagg.NewMemoryStore(), nil)
			// The invalid event comes second: the valid first one must not be stored either.
			res, err := agg.Publish(t.Context(), event("orders", "0"), tt.event, event("orders", "2"))
			var verr *eventagg.ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("Publish() = %+v, %v; want a *ValidationError", res, err)
			}
			if !errors.Is(err, eventagg.ErrInvalidEvent) {
				t.Errorf("errors.Is(%v, ErrInvalidEvent) = false", err)
			}
			if verr.Index != 1 || verr.Field != tt.field || verr.Reason == "" {
				t.Errorf("ValidationError = %+v, want index 1, field %q and a reason", verr, tt.field)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name the field %q", err, tt.field)
			}
			st := mustStats(t, agg)
			if st.Received != 0 || len(st.Topics) != 0 {
				t.Errorf("after a rejected batch Stats() = %+v, want nothing counted", st)
			}
		})
	}
}

func TestPublishValidEdgeCases(t *testing.T) {
	agg := MustNew(t, eventagg.NewMemoryStore(), nil)
	events := []eventagg.Event{
		{Topic: strings.Repeat("t", 255), EventID: strings.Repeat("i", 255), Source: strings.Repeat("s", 255)},
		{Topic: "unicode ✓", EventID: " padded id ", Payload: json.RawMessage(`[1,"two",{"3":null}]`)},
		{Topic: "t", EventID: "zero-time-is-stamped", Payload: json.RawMessage(`null`)},
	}
	res, err := agg.Publish(t.Context(), events...)
	if err != nil {
		t.Fatalf("Publish() error: %v", err)
	}
	if res.Processed != len(events) {
		t.Errorf("Processed = %d, want %d", res.Processed, len(events))
	}
}

func TestPublishDeduplicates(t *testing.T) {
	agg := MustNew(t, MustOpenSQLite(t, filepath.Join(t.TempDir(), "events.db"), nil), nil)
	steps := []struct {
		events []eventagg.Event
		want   string // see summary
	}{
		{[]eventagg.Event{event("a", "1"), event("a", "2"), event("a", "1"), event("b", "1")}, "3 stored, 1 dropped, 0 conflicts: SSDS"},
		{[]eventagg.Event{event("a", "2"), event("a", "3"), event("b", "1")}, "1 stored, 2 dropped, 0 conflicts: DSD"},
		{nil, "0 stored, 0 dropped, 0 conflicts: "},
	}
	for i, step := range steps {
		got, err := agg.Publish(t.Context(), step.events...)
		if err != nil {
			t.Fatalf("Publish #%d error: %v", i+1, err)
		}
		if s := summary(t, got); s != step.want {
			t.Errorf("Publish #%d = %s, want %s", i+1, s, step.want)
		}
	}
	want := eventagg.Stats{
		Counts: eventagg.Counts{Received: 7, UniqueProcessed: 4, DuplicateDropped: 3, Stored: 4},
		Topics: map[string]eventagg.Counts{
			"a": {Received: 5, UniqueProcessed: 3, DuplicateDropped: 2, Stored: 3},
			"b": {Received: 2, UniqueProcessed: 1, DuplicateDropped: 1, Stored: 1},
		},
		TopicCount: 2,
		Claims:     &eventagg.ClaimCounts{}, // the store holds claims, none yet
	}
	if diff := cmp.Diff(want, mustStats(t, agg), cmpopts.IgnoreFields(eventagg.Stats{}, "StartedAt")); diff != "" {
		t.Errorf("Stats() mismatch (-want +got):\n%s", diff)
	}
}

func TestPublishStampsZeroTimestamps(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 7200))
	agg := MustNew(t, eventagg.NewMemoryStore(), &eventagg.Options{Now: func() time.Time { return now }})
	in := []eventagg.Event{{Topic: "t", EventID: "stamped"}, event("t", "kept")}
	if _, err := agg.Publish(t.Context(), in...); err != nil {
		t.Fatalf("Publish() error: %v", err)
	}
	if !in[0].Timestamp.IsZero() {
		t.Errorf("Publish modified the caller's event: Timestamp = %v", in[0].Timestamp)
	}
	var got []time.Time
	for e, err := range agg.Events(t.Context(), eventagg.Query{}) {
		if err != nil {
			t.Fatalf("Events() error: %v", err)
		}
		got = append(got, e.Timestamp)
	}
	want := []time.Time{now.UTC(), t0}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored timestamps mismatch (-want +got):\n%s", diff)
	}
	if st := mustStats(t, agg); !st.StartedAt.Equal(now) {
		t.Errorf("Stats().StartedAt = %v, want %v", st.StartedAt, now)
	}
}

// gateStore wraps a Store: each Append waits until the test sends on gate, and
// records the size of each batch it is given.
type gateStore struct {
	eventagg.Store
	gate chan struct{}

	mu      sync.Mutex
	batches []int
}

func newGateStore() *gateStore {
	return &gateStore{Store: eventagg.NewMemoryStore(), gate: make(chan struct{})}
}

func (g *gateStore) Append(ctx context.Context, events []eventagg.Event, opts eventagg.AppendOptions) ([]eventagg.Outcome, error) {
	<-g.gate
	g.mu.Lock()
	g.batches = append(g.batches, len(events))
	g.mu.Unlock()
	return g.Store.Append(ctx, events, opts)
}

func (g *gateStore) Batches() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.batches...)
}

type outcome struct {
	res eventagg.Result
	err error
}

// publishAsync publishes events in a new goroutine and returns where its outcome arrives.
func publishAsync(ctx context.Context, agg *eventagg.Aggregator, events ...eventagg.Event) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		res, err := agg.Publish(ctx, events...)
		ch <- outcome{res, err}
	}()
	return ch
}

func TestGroupCommitMergesWaitingCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newGateStore()
		agg := MustNew(t, store, nil)
		ctx := t.Context()

		first := publishAsync(ctx, agg, event("t", "first"))
		synctest.Wait() // the writer holds "first" at the gate
		const callers = 20
		outs := make([]<-chan outcome, callers)
		for i := range outs {
			// Each caller sends one event of its own and one every caller shares;
			// odd callers also resend "first".
			batch := []eventagg.Event{event("t", "own-"+strconv.Itoa(i)), event("t", "shared")}
			if i%2 == 1 {
				batch = append(batch, event("t", "first"))
			}
			outs[i] = publishAsync(ctx, agg, batch...)
			synctest.Wait() // queue the callers in index order
		}
		synctest.Wait()
		if got := agg.QueueLen(); got != callers {
			t.Fatalf("QueueLen() = %d, want %d waiting calls", got, callers)
		}
		close(store.gate)

		if o := <-first; o.err != nil || o.res.Processed != 1 {
			t.Errorf("first Publish = %+v, %v; want 1 processed", o.res, o.err)
		}
		sharedWinners := 0
		for i, ch := range outs {
			o := <-ch
			if o.err != nil {
				t.Fatalf("caller %d: Publish error: %v", i, o.err)
			}
			// The queue is FIFO, so caller 0 stores "shared" and the others drop it.
			want := "1 stored, 1 dropped, 0 conflicts: SD"
			switch {
			case i == 0:
				want = "2 stored, 0 dropped, 0 conflicts: SS"
			case i%2 == 1:
				want = "1 stored, 2 dropped, 0 conflicts: SDD"
			}
			if o.res.Outcomes[1].Status == eventagg.Stored {
				sharedWinners++
			}
			if got := summary(t, o.res); got != want {
				t.Errorf("caller %d got %s, want %s: another caller's result?", i, got, want)
			}
		}
		if sharedWinners != 1 {
			t.Errorf("%d callers stored the shared event, want 1", sharedWinners)
		}
		if diff := cmp.Diff([]int{1, callers*2 + callers/2}, store.Batches()); diff != "" {
			t.Errorf("Append batch sizes mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestGroupCommitRespectsMaxEventsPerCommit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newGateStore()
		agg := MustNew(t, store, &eventagg.Options{MaxEventsPerCommit: 5})
		ctx := t.Context()
		first := publishAsync(ctx, agg, event("t", "0"))
		synctest.Wait()
		sizes := []int{2, 2, 2, 7, 1, 3}
		var outs []<-chan outcome
		for i, n := range sizes {
			batch := make([]eventagg.Event, n)
			for j := range batch {
				batch[j] = event("t", strconv.Itoa(i)+"-"+strconv.Itoa(j))
			}
			outs = append(outs, publishAsync(ctx, agg, batch...))
			synctest.Wait() // keep the queue in this order
		}
		close(store.gate)
		<-first
		for i, ch := range outs {
			if o := <-ch; o.err != nil || o.res.Processed != sizes[i] {
				t.Errorf("caller %d: Publish = %+v, %v; want %d processed", i, o.res, o.err, sizes[i])
			}
		}
		// Calls are merged in order up to 5 events; the 7-event call goes alone.
		if diff := cmp.Diff([]int{1, 4, 2, 7, 4}, store.Batches()); diff != "" {
			t.Errorf("Append batch sizes mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestPublishBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newGateStore()
		agg := MustNew(t, store, &eventagg.Options{QueueSize: 1})
		ctx := t.Context()
		held := publishAsync(ctx, agg, event("t", "held")) // taken by the writer
		synctest.Wait()
		queued := publishAsync(ctx, agg, event("t", "queued")) // fills the queue
		synctest.Wait()

		timeout, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		start := time.Now()
		res, err := agg.Publish(timeout, event("t", "rejected"))
		if !errors.Is(err, eventagg.ErrQueueFull) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Publish on a full queue = %+v, %v; want ErrQueueFull wrapping DeadlineExceeded", res, err)
		}
		if waited := time.Since(start); waited != time.Second {
			t.Errorf("Publish waited %v for room, want the context's 1s", waited)
		}
		close(store.gate)
		for _, ch := range []<-chan outcome{held, queued} {
			if o := <-ch; o.err != nil {
				t.Errorf("Publish error: %v", o.err)
			}
		}
		st := mustStats(t, agg)
		if st.Received != 2 || st.UniqueProcessed != 2 {
			t.Errorf("Stats() = %+v; want the 2 accepted events only", st.Counts)
		}
	})
}

func TestPublishQueueTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newGateStore()
		agg := MustNew(t, store, &eventagg.Options{QueueSize: 1, QueueTimeout: 250 * time.Millisecond})
		ctx := t.Context()
		held := publishAsync(ctx, agg, event("t", "held"))
		synctest.Wait()
		queued := publishAsync(ctx, agg, event("t", "queued"))
		synctest.Wait()
		start := time.Now()
		if _, err := agg.Publish(ctx, event("t", "rejected")); !errors.Is(err, eventagg.ErrQueueFull) {
			t.Errorf("Publish on a full queue error = %v, want ErrQueueFull", err)
		}
		if waited := time.Since(start); waited != 250*time.Millisecond {
			t.Errorf("Publish waited %v, want QueueTimeout (250ms)", waited)
		}
		close(store.gate)
		<-held
		<-queued
		if _, err := agg.Publish(ctx, event("t", "room-again")); err != nil {
			t.Errorf("Publish once the queue drained: %v", err)
		}
	})
}

func TestCloseDrainsQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newGateStore()
		agg, err := eventagg.New(store, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		var outs []<-chan outcome
		for i := range 5 {
			outs = append(outs, publishAsync(ctx, agg, event("t", strconv.Itoa(i))))
		}
		synctest.Wait()
		closed := make(chan error, 1)
		go func() { closed <- agg.Close() }()
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("Close() returned (%v) before the queue was drained", err)
		default:
		}
		if _, err := agg.Publish(ctx, event("t", "late")); !errors.Is(err, eventagg.ErrClosed) {
			t.Errorf("Publish during Close error = %v, want ErrClosed", err)
		}
		close(store.gate)
		if err := <-closed; err != nil {
			t.Errorf("Close() error: %v", err)
		}
		for i, ch := range outs {
			if o := <-ch; o.err != nil || o.res.Processed != 1 {
				t.Errorf("queued Publish %d = %+v, %v; want stored", i, o.res, o.err)
			}
		}
		if _, err := agg.Publish(ctx, event("t", "after")); !errors.Is(err, eventagg.ErrClosed) {
			t.Errorf("Publish after Close error = %v, want ErrClosed", err)
		}
		if err := agg.Close(); err != nil {
			t.Errorf("second Close() error: %v", err)
		}
		// Close leaves the store open: it belongs to the caller.
		st := mustStats(t, agg)
		if st.UniqueProcessed != 5 {
			t.Errorf("after Close, UniqueProcessed = %d, want the 5 drained events", st.UniqueProcessed)
		}
	})
}

func TestCloseReleasesPublishWaitingForRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newGateStore()
		agg, err := eventagg.New(store, &eventagg.Options{QueueSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		held := publishAsync(ctx, agg, event("t", "held"))
		synctest.Wait()
		queued := publishAsync(ctx, agg, event("t", "queued"))
		synctest.Wait()
		blocked := publishAsync(ctx, agg, event("t", "blocked"))
		synctest.Wait()
		go agg.Close()
		synctest.Wait()
		if o := <-blocked; !errors.Is(o.err, eventagg.ErrClosed) {
			t.Errorf("Publish waiting for room during Close = %+v, %v; want ErrClosed", o.res, o.err)
		}
		close(store.gate)
		for _, ch := range []<-chan outcome{held, queued} {
			if o := <-ch; o.err != nil {
				t.Errorf("queued Publish error: %v", o.err)
			}
		}
		agg.Close()
	})
}

func TestPublishSkipsCallerThatLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newGateStore()
		agg := MustNew(t, store, nil)
		held := publishAsync(t.Context(), agg, event("t", "held"))
		synctest.Wait()
		ctx, cancel := context.WithCancel(t.Context())
		left := publishAsync(ctx, agg, event("t", "left"))
		synctest.Wait()
		cancel()
		if o := <-left; !errors.Is(o.err, context.Canceled) {
			t.Errorf("Publish with cancelled ctx = %+v, %v; want context.Canceled", o.res, o.err)
		}
		close(store.gate)
		<-held
		agg.Close()
		if diff := cmp.Diff([]int{1}, store.Batches()); diff != "" {
			t.Errorf("the cancelled call was written (-want +got batch sizes):\n%s", diff)
		}
	})
}

// faultyStore fails every Append with err.
type faultyStore struct {
	eventagg.Store
	err error
}

func (f faultyStore) Append(context.Context, []eventagg.Event, eventagg.AppendOptions) ([]eventagg.Outcome, error) {
	return nil, f.err
}

func TestPublishStoreError(t *testing.T) {
	fault := errors.New("disk on fire")
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	agg := MustNew(t, faultyStore{eventagg.NewMemoryStore(), fault}, &eventagg.Options{Logger: logger})
	res, err := agg.Publish(t.Context(), event("t", "1"), event("t", "2"), event("t", "3"))
	if !errors.Is(err, eventagg.ErrStore) || !errors.Is(err, fault) {
		t.Errorf("Publish() = %+v, %v; want ErrStore wrapping the store's error", res, err)
	}
	if st := mustStats(t, agg); st.Received != 0 {
		t.Errorf("Stats().Received = %d after a failed write, want 0", st.Received)
	}
	if !strings.Contains(logs.String(), "disk on fire") || !strings.Contains(logs.String(), "events=3 ") {
		t.Errorf("the failed write of 3 events was not logged with its size; log:\n%s", logs.String())
	}
}

func TestPublishLogsDuplicatesWithoutPayload(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	agg := MustNew(t, eventagg.NewMemoryStore(), &eventagg.Options{Logger: logger})
	e := event("orders", "o-1")
	e.Payload = json.RawMessage(`{"secret":"hunter2"}`)
	for range 2 {
		if _, err := agg.Publish(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	var rec map[string]any
	if err := json.Unmarshal(logs.Bytes(), &rec); err != nil {
		t.Fatalf("want exactly one JSON log record, got %q: %v", logs.String(), err)
	}
	if rec["topic"] != "orders" || rec["event_id"] != "o-1" || rec["level"] != "DEBUG" {
		t.Errorf("duplicate log record = %v, want topic and event_id at DEBUG", rec)
	}
	if strings.Contains(logs.String(), "hunter2") {
		t.Errorf("the log holds the payload: %s", logs.String())
	}
}

func TestPublishSilentByDefault(t *testing.T) {
	// With no Logger, nothing is written anywhere; this mostly checks that a
	// nil Logger is safe with duplicates and failures.
	agg := MustNew(t, faultyStore{eventagg.NewMemoryStore(), errors.New("x")}, nil)
	if _, err := agg.Publish(t.Context(), event("t", "1")); !errors.Is(err, eventagg.ErrStore) {
		t.Errorf("Publish() error = %v, want ErrStore", err)
	}
}

func TestPublishCancelledContext(t *testing.T) {
	agg := MustNew(t, eventagg.NewMemoryStore(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := agg.Publish(ctx, event("t", "1")); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish(cancelled) error = %v, want context.Canceled", err)
	}
	if st := mustStats(t, agg); st.Received != 0 {
		t.Errorf("Received = %d, want 0", st.Received)
	}
}

func TestNewNeedsStore(t *testing.T) {
	if _, err := eventagg.New(nil, nil); err == nil {
		t.Error("New(nil, nil) error = nil, want an error")
	}
}

func TestPing(t *testing.T) {
	sqlite := MustOpenSQLite(t, filepath.Join(t.TempDir(), "events.db"), nil)
	for name, store := range map[string]eventagg.Store{"memory": eventagg.NewMemoryStore(), "sqlite": sqlite} {
		agg := MustNew(t, store, nil)
		if err := agg.Ping(t.Context()); err != nil {
			t.Errorf("%s: Ping() error: %v", name, err)
		}
		store.Close()
		if err := agg.Ping(t.Context()); !errors.Is(err, eventagg.ErrClosed) {
			t.Errorf("%s: Ping() on a closed store = %v, want ErrClosed", name, err)
		}
	}
	agg := MustNew(t, eventagg.NewMemoryStore(), nil)
	agg.Close()
	if err := agg.Ping(t.Context()); !errors.Is(err, eventagg.ErrClosed) {
		t.Errorf("Ping() on a closed Aggregator = %v, want ErrClosed", err)
	}
}

func TestConcurrentPublishersSQLite(t *testing.T) {
	store := MustOpenSQLite(t, filepath.Join(t.TempDir(), "events.db"), nil)
	agg := MustNew(t, store, nil)
	const publishers, perPublisher = 16, 10
	var wg sync.WaitGroup
	results := make([][]eventagg.Result, publishers)
	for p := range publishers {
		wg.Go(func() {
			for i := range perPublisher {
				// Every publisher sends the same ids: only one copy of each is stored.
				res, err := agg.Publish(context.Background(), event("t", strconv.Itoa(i)), event("own", strconv.Itoa(p*perPublisher+i)))
				if err != nil {
					t.Errorf("Publish error: %v", err)
					return
				}
				results[p] = append(results[p], res)
			}
		})
	}
	wg.Wait()
	processed, dups := 0, 0
	for _, rs := range results {
		for _, r := range rs {
			if r.Processed+r.Duplicates != 2 || len(r.Outcomes) != 2 || r.Outcomes[1].Status != eventagg.Stored {
				t.Errorf("result %+v: want 2 events accounted, the own event new", r)
			}
			processed += r.Processed
			dups += r.Duplicates
		}
	}
	want := eventagg.Counts{
		Received:         publishers * perPublisher * 2,
		UniqueProcessed:  perPublisher + publishers*perPublisher,
		DuplicateDropped: (publishers - 1) * perPublisher,
		Stored:           perPublisher + publishers*perPublisher,
	}
	if processed != int(want.UniqueProcessed) || dups != int(want.DuplicateDropped) {
		t.Errorf("results sum to %d processed, %d duplicates; want %d, %d", processed, dups, want.UniqueProcessed, want.DuplicateDropped)
	}
	if diff := cmp.Diff(want, mustStats(t, agg).Counts); diff != "" {
		t.Errorf("Stats() mismatch (-want +got):\n%s", diff)
	}
}

// FuzzPublish checks the invariants of Publish on arbitrary events: a batch is
// either rejected whole with a *ValidationError and nothing counted, or every
// event is accounted as processed or duplicate; resending stores nothing.
func FuzzPublish(f *testing.F) {
	f.Add("orders", "o-1", "svc", []byte(`{"a":1}`), uint8(3), int64(0))
	f.Add("", "id", "", []byte(nil), uint8(1), int64(1))
	f.Add("t", " ", "", []byte(`[`), uint8(2), int64(-1))
	f.Add("t\x00", "\xff", "\n", []byte(`null`), uint8(0), int64(1<<62))
	f.Fuzz(func(t *testing.T, topic, id, source string, payload []byte, n uint8, ts int64) {
		agg := MustNew(t, eventagg.NewMemoryStore(), nil)
		batch := make([]eventagg.Event, int(n%8)+1)
		for i := range batch {
			batch[i] = eventagg.Event{
				Topic:     topic,
				EventID:   id + strconv.Itoa(i%3), // some copies repeat within the batch
				Timestamp: time.Unix(0, ts),
				Source:    source,
				Payload:   payload,
			}
		}
		res, err := agg.Publish(t.Context(), batch...)
		st := mustStats(t, agg)
		if err != nil {
			var verr *eventagg.ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("Publish() error %v is not a *ValidationError", err)
			}
			if st.Received != 0 {
				t.Fatalf("rejected batch counted: %+v", st.Counts)
			}
			return
		}
		if res.Processed+res.Duplicates != len(batch) || len(res.Outcomes) != len(batch) {
			t.Fatalf("Publish(%d events) = %+v: events unaccounted", len(batch), res)
		}
		if res.Processed != min(len(batch), 3) {
			t.Fatalf("Processed = %d, want %d distinct ids", res.Processed, min(len(batch), 3))
		}
		again, err := agg.Publish(t.Context(), batch...)
		if err != nil || again.Processed != 0 || again.Duplicates != len(batch) {
			t.Fatalf("resend = %+v, %v; want all %d dropped as duplicates", again, err, len(batch))
		}
		if st := mustStats(t, agg); st.Received != st.UniqueProcessed+st.DuplicateDropped {
			t.Fatalf("counters broken: %+v", st.Counts)
		}
	})
}

func TestCloseDrainsPipelinedStore(t *testing.T) {
	// SQLiteStore answers callers from a second goroutine once their batch is
	// durable; Close must wait for those answers too.
	store := MustOpenSQLite(t, filepath.Join(t.TempDir(), "events.db"), nil)
	agg, err := eventagg.New(store, nil)
	if err != nil {
		t.Fatal(err)
	}
	const callers = 40
	results := make(chan error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			_, err := agg.Publish(context.Background(), event("t", strconv.Itoa(i)))
			results <- err
		})
	}
	if err := agg.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(results)
	stored := 0
	for err := range results {
		switch {
		case err == nil:
			stored++
		case !errors.Is(err, eventagg.ErrClosed):
			t.Errorf("Publish during Close error = %v, want nil or ErrClosed", err)
		}
	}
	st, err := store.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.UniqueProcessed != int64(stored) || st.Received != int64(stored) {
		t.Errorf("after Close, %d publishes succeeded but Stats() = %+v", stored, st.Counts)
	}
}

// summary describes a Result: its counts, and a letter per outcome (S
// stored, D duplicate, C conflict), checking that the counts and outcomes
// agree and that stored outcomes carry increasing sequence numbers.
func summary(t *testing.T, r eventagg.Result) string {
	t.Helper()
	var b strings.Builder
	var stored, dropped, conflicts int
	var last int64
	for i, o := range r.Outcomes {
		switch o.Status {
		case eventagg.Stored:
			b.WriteByte('S')
			stored++
			if o.Seq <= last {
				t.Errorf("outcome %d stored with Seq %d after %d", i, o.Seq, last)
			}
			last = o.Seq
		case eventagg.Duplicate:
			b.WriteByte('D')
			dropped++
		case eventagg.Conflict:
			b.WriteByte('C')
			dropped++
			conflicts++
		}
	}
	if stored != r.Processed || dropped != r.Duplicates || conflicts != r.Conflicts {
		t.Errorf("Result %+v: the counts disagree with the outcomes %s", r, b.String())
	}
	return fmt.Sprintf("%d stored, %d dropped, %d conflicts: %s", r.Processed, r.Duplicates, r.Conflicts, b.String())
}
