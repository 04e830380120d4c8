// Package storetest checks that an [eventagg.Store] keeps the contract of the
// interface: exact deduplication, atomic appends, counters that agree with
// the events, listing in acceptance order.
//
// A store's test runs the whole suite in one call:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			Open: func(t testing.TB) eventagg.Store { return mystore.Open(t.TempDir()) },
//		})
//	}
//
// Run it under the race detector (go test -race): several subtests append
// from many goroutines at once. The subtests of optional capabilities
// (claims: [eventagg.Claimer]) skip stores that do not have them.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Harness opens the stores under test.
type Harness struct {
	// Open returns a new, empty store. Required. The suite closes it.
	Open func(t testing.TB) eventagg.Store
	// Reopen closes s and returns a store over the same data, as a restarted
	// process would open it. Optional: when nil, SurvivesReopen is skipped.
	Reopen func(t testing.TB, s eventagg.Store) eventagg.Store
}

// Run runs the conformance suite against the stores h opens, one per subtest.
// Subtests run in parallel.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil {
		t.Fatal("storetest: Harness.Open is nil")
	}
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"NewEvents", testNewEvents},
		{"EmptyStats", testEmptyStats},
		{"DuplicateAcrossCalls", testDuplicateAcrossCalls},
		{"DuplicateWithinCall", testDuplicateWithinCall},
		{"FirstCopyWins", testFirstCopyWins},
		{"SameIDOtherTopic", testSameIDOtherTopic},
		{"KeysAreByteExact", testKeysAreByteExact},
		{"RoundTripByteExact", testRoundTrip},
		{"EmptyAppend", testEmptyAppend},
		{"AtomicOnCancelledContext", testAtomicOnCancelledContext},
		{"AtomicOnClosedStore", testAtomicOnClosedStore},
		{"CloseIsIdempotent", testCloseIsIdempotent},
		{"ListingOrder", testListingOrder},
		{"TopicFilter", testTopicFilter},
		{"CursorPagination", testCursorPagination},
		{"ListingSpansManyPages", testListingSpansManyPages},
		{"ListingOfLargePayloads", testListingOfLargePayloads},
		{"EarlyBreak", testEarlyBreak},
		{"ListingIsReRunnable", testListingIsReRunnable},
		{"ListingCancelled", testListingCancelled},
		{"ConcurrentOverlap", testConcurrentOverlap},
		{"CountersInvariant", testCountersInvariant},
		{"ConflictWithinCall", testConflictWithinCall},
		{"ConflictAcrossCalls", testConflictAcrossCalls},
		{"IdenticalCopyIsNotConflict", testIdenticalCopyIsNotConflict},
		{"ConflictCounters", testConflictCounters},
		{"RejectConflicts", testRejectConflicts},
		{"StoredOutcomesCarrySeq", testStoredOutcomesCarrySeq},
		{"ExpiryByWindow", testExpiryByWindow},
		{"ExpiryInChunks", testExpiryInChunks},
		{"KeyReuseAfterExpiry", testKeyReuseAfterExpiry},
		{"DedupWindowOutlivesEvents", testDedupWindowOutlivesEvents},
		{"CursorOverExpired", testCursorOverExpired},
		{"ExpiryCountersInvariant", testExpiryCountersInvariant},
		{"ExpirySurvivesReopen", testExpirySurvivesReopen},
		{"QueryStatsPages", testQueryStatsPages},
		{"SurvivesReopen", testSurvivesReopen},
	}
	tests = append(tests, claimTests...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, h)
		})
	}
}

// base is the timestamp of generated events: not UTC, with nanoseconds.
var base = time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.FixedZone("UTC+1", 3600))

// ev returns a valid event with a distinct timestamp derived from id.
func ev(topic, id string) eventagg.Event {
	n, _ := strconv.Atoi(id)
	return eventagg.Event{
		Topic:     topic,
		EventID:   id,
		Timestamp: base.Add(time.Duration(n) * time.Millisecond),
		Source:    "storetest",
		Payload:   json.RawMessage(`{"id":"` + id + `"}`),
	}
}

// evs returns events ids[i] on topic.
func evs(topic string, ids ...string) []eventagg.Event {
	out := make([]eventagg.Event, len(ids))
	for i, id := range ids {
		out[i] = ev(topic, id)
	}
	return out
}

// numbered returns n events on topic with ids from, from+1, ...
func numbered(topic string, from, n int) []eventagg.Event {
	out := make([]eventagg.Event, n)
	for i := range out {
		out[i] = ev(topic, strconv.Itoa(from+i))
	}
	return out
}

func open(t *testing.T, h Harness) eventagg.Store {
	t.Helper()
	s := h.Open(t)
	if s == nil {
		t.Fatal("Harness.Open returned nil")
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func appendOK(t *testing.T, s eventagg.Store, events []eventagg.Event) []eventagg.Outcome {
	t.Helper()
	outcomes, err := s.Append(t.Context(), events, eventagg.AppendOptions{})
	if err != nil {
		t.Fatalf("Append(%d events) error: %v", len(events), err)
	}
	if len(outcomes) != len(events) {
		t.Fatalf("Append(%d events) returned %d outcomes", len(events), len(outcomes))
	}
	return outcomes
}

func list(t *testing.T, s eventagg.Store, q eventagg.Query) []eventagg.Event {
	t.Helper()
	var out []eventagg.Event
	for e, err := range s.Events(t.Context(), q) {
		if err != nil {
			t.Fatalf("Events(%+v) error: %v", q, err)
		}
		out = append(out, e)
	}
	return out
}

func stats(t *testing.T, s eventagg.Store) eventagg.Stats {
	t.Helper()
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatalf("Stats() error: %v", err)
	}
	return st
}

// eventOpts compares events ignoring Seq, which stores assign.
var eventOpts = cmp.Options{
	cmpopts.IgnoreFields(eventagg.Event{}, "Seq"),
	cmpopts.EquateEmpty(),
	cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
}

func diffEvents(t *testing.T, what string, want, got []eventagg.Event) {
	t.Helper()
	if diff := cmp.Diff(want, got, eventOpts); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, diff)
	}
}

// diffOutcomes compares the statuses of got with want, a letter per event:
// S stored, D duplicate, C conflict. A stored event must have a Seq above
// the last one, others none.
func diffOutcomes(t *testing.T, what, want string, got []eventagg.Outcome) {
	t.Helper()
	var b strings.Builder
	var last int64
	for i, o := range got {
		switch o.Status {
		case eventagg.Stored:
			b.WriteByte('S')
			if o.Seq <= last {
				t.Errorf("%s: outcome %d is stored with Seq %d, after %d", what, i, o.Seq, last)
			}
			last = o.Seq
		case eventagg.Duplicate:
			b.WriteByte('D')
		case eventagg.Conflict:
			b.WriteByte('C')
		default:
			b.WriteByte('?')
		}
		if o.Status != eventagg.Stored && o.Seq != 0 {
			t.Errorf("%s: outcome %d is %v with Seq %d, want 0", what, i, o.Status, o.Seq)
		}
	}
	if b.String() != want {
		t.Errorf("%s outcomes = %s, want %s (S stored, D duplicate, C conflict)", what, b.String(), want)
	}
}

func diffStats(t *testing.T, want map[string]eventagg.Counts, got eventagg.Stats) {
	t.Helper()
	wantStats := eventagg.Stats{Topics: want, TopicCount: int64(len(want))}
	for _, c := range want {
		wantStats.Add(c)
	}
	if diff := cmp.Diff(wantStats, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Stats() mismatch (-want +got):\n%s", diff)
	}
}

func counts(received, unique, dups int64) eventagg.Counts {
	return eventagg.Counts{Received: received, UniqueProcessed: unique, DuplicateDropped: dups, Stored: unique}
}

func testNewEvents(t *testing.T, h Harness) {
	s := open(t, h)
	in := evs("orders", "1", "2", "3")
	diffOutcomes(t, "Append", "SSS", appendOK(t, s, in))
	diffEvents(t, "Events", in, list(t, s, eventagg.Query{}))
	diffStats(t, map[string]eventagg.Counts{"orders": counts(3, 3, 0)}, stats(t, s))
}

func testEmptyStats(t *testing.T, h Harness) {
	s := open(t, h)
	st := stats(t, s)
	if st.Topics == nil {
		t.Error("Stats().Topics is nil on an empty store; want an empty map")
	}
	diffStats(t, nil, st)
	if got := list(t, s, eventagg.Query{}); len(got) != 0 {
		t.Errorf("Events() on an empty store = %d events, want 0", len(got))
	}
}

func testDuplicateAcrossCalls(t *testing.T, h Harness) {
	s := open(t, h)
	appendOK(t, s, evs("orders", "1", "2"))
	diffOutcomes(t, "second Append", "DSD", appendOK(t, s, evs("orders", "2", "3", "1")))
	diffOutcomes(t, "resend", "DDD", appendOK(t, s, evs("orders", "1", "2", "3")))
	diffEvents(t, "Events", evs("orders", "1", "2", "3"), list(t, s, eventagg.Query{}))
	diffStats(t, map[string]eventagg.Counts{"orders": counts(8, 3, 5)}, stats(t, s))
}

func testDuplicateWithinCall(t *testing.T, h Harness) {
	s := open(t, h)
	diffOutcomes(t, "Append", "SSDDS",
		appendOK(t, s, evs("orders", "1", "2", "1", "1", "3")))
	diffEvents(t, "Events", evs("orders", "1", "2", "3"), list(t, s, eventagg.Query{}))
	diffStats(t, map[string]eventagg.Counts{"orders": counts(5, 3, 2)}, stats(t, s))
}

func testFirstCopyWins(t *testing.T, h Harness) {
	s := open(t, h)
	first := ev("orders", "1")
	later := first
	later.Payload = json.RawMessage(`{"changed":true}`)
	later.Source = "other"
	later.Timestamp = base.Add(time.Hour)
	diffOutcomes(t, "Append", "SC", appendOK(t, s, []eventagg.Event{first, later}))
	diffOutcomes(t, "resend", "C", appendOK(t, s, []eventagg.Event{later}))
	diffEvents(t, "Events", []eventagg.Event{first}, list(t, s, eventagg.Query{}))
}

func testSameIDOtherTopic(t *testing.T, h Harness) {
	s := open(t, h)
	in := []eventagg.Event{ev("orders", "1"), ev("payments", "1"), ev("orders", "1")}
	diffOutcomes(t, "Append", "SSD", appendOK(t, s, in))
	diffEvents(t, "Events", in[:2], list(t, s, eventagg.Query{}))
	diffStats(t, map[string]eventagg.Counts{
		"orders":   counts(2, 1, 1),
		"payments": counts(1, 1, 0),
	}, stats(t, s))
}

func testKeysAreByteExact(t *testing.T, h Harness) {
	s := open(t, h)
	// Case, trailing space, Unicode normalisation forms and SQL-looking text
	// are all distinct keys.
	ids := []string{"a", "A", "a ", "\u00e9", "e\u0301", "'; DROP TABLE events; --", `"quoted"`, "100%_"}
	in := evs("t", ids...)
	in = append(in, ev("T", "a"), ev("t ", "a"))
	diffOutcomes(t, "Append", strings.Repeat("S", len(in)), appendOK(t, s, in))
	diffEvents(t, "Events", in, list(t, s, eventagg.Query{}))
	diffEvents(t, "Events(topic=t)", in[:len(ids)], list(t, s, eventagg.Query{Topic: "t"}))
}

func testRoundTrip(t *testing.T, h Harness) {
	s := open(t, h)
	in := []eventagg.Event{
		{Topic: "t", EventID: "spaces", Timestamp: base, Payload: json.RawMessage(" {\n \"b\" : [1, 2.50, 1e400] ,\"a\":null }\t")},
		{Topic: "t", EventID: "escapes", Timestamp: time.Unix(0, 1).In(time.FixedZone("", -7*3600)), Payload: json.RawMessage(`"\u00e9\ud83d\ude00 é 😀 \" \\"`)},
		{Topic: "t", EventID: "scalar", Timestamp: time.Date(1700, 1, 1, 0, 0, 0, 999999999, time.UTC), Payload: json.RawMessage(`12345678901234567890123`)},
		{Topic: "t", EventID: "null", Timestamp: time.Date(2262, 1, 1, 0, 0, 0, 1, time.UTC), Payload: json.RawMessage(`null`)},
		{Topic: "t", EventID: "none", Timestamp: base, Source: "svc-1"},
		{Topic: "t", EventID: "empty-string", Timestamp: base, Payload: json.RawMessage(`""`)},
	}
	appendOK(t, s, in)
	got := list(t, s, eventagg.Query{})
	if len(got) != len(in) {
		t.Fatalf("Events() returned %d events, want %d", len(got), len(in))
	}
	for i, e := range got {
		w := in[i]
		if e.Topic != w.Topic || e.EventID != w.EventID || e.Source != w.Source {
			t.Errorf("event %d = %q/%q/%q, want %q/%q/%q", i, e.Topic, e.EventID, e.Source, w.Topic, w.EventID, w.Source)
		}
		if string(e.Payload) != string(w.Payload) {
			t.Errorf("event %q payload = %q, want byte-exact %q", w.EventID, e.Payload, w.Payload)
		}
		if !e.Timestamp.Equal(w.Timestamp) || e.Timestamp.Location() != time.UTC {
			t.Errorf("event %q timestamp = %v, want %v in UTC", w.EventID, e.Timestamp, w.Timestamp.UTC())
		}
	}
}

func testEmptyAppend(t *testing.T, h Harness) {
	s := open(t, h)
	outcomes, err := s.Append(t.Context(), nil, eventagg.AppendOptions{})
	if err != nil || len(outcomes) != 0 {
		t.Errorf("Append(nil) = %v, %v; want no outcomes and no error", outcomes, err)
	}
	diffStats(t, nil, stats(t, s))
}

func testAtomicOnCancelledContext(t *testing.T, h Harness) {
	s := open(t, h)
	appendOK(t, s, evs("orders", "1"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	outcomes, err := s.Append(ctx, evs("orders", "1", "2", "3"), eventagg.AppendOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Append(cancelled ctx) = %v, %v; want context.Canceled", outcomes, err)
	}
	diffEvents(t, "Events", evs("orders", "1"), list(t, s, eventagg.Query{}))
	diffStats(t, map[string]eventagg.Counts{"orders": counts(1, 1, 0)}, stats(t, s))
	// The store still works after a cancelled append.
	diffOutcomes(t, "Append after cancel", "DS", appendOK(t, s, evs("orders", "1", "2")))
}

func testAtomicOnClosedStore(t *testing.T, h Harness) {
	s := open(t, h)
	appendOK(t, s, evs("orders", "1"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close() error: %v", err)
	}
	if outcomes, err := s.Append(t.Context(), evs("orders", "2"), eventagg.AppendOptions{}); !errors.Is(err, eventagg.ErrClosed) {
		t.Errorf("Append after Close = %v, %v; want ErrClosed", outcomes, err)
	}
	if _, err := s.Stats(t.Context()); !errors.Is(err, eventagg.ErrClosed) {
		t.Errorf("Stats after Close error = %v, want ErrClosed", err)
	}
	var listErr error
	for _, err := range s.Events(t.Context(), eventagg.Query{}) {
		listErr = err
	}
	if !errors.Is(listErr, eventagg.ErrClosed) {
		t.Errorf("Events after Close yielded error %v, want ErrClosed", listErr)
	}
	if h.Reopen == nil {
		return
	}
	s = h.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	diffEvents(t, "Events after reopen", evs("orders", "1"), list(t, s, eventagg.Query{}))
	diffStats(t, map[string]eventagg.Counts{"orders": counts(1, 1, 0)}, stats(t, s))
}

func testCloseIsIdempotent(t *testing.T, h Harness) {
	s := open(t, h)
	for i := range 3 {
		if err := s.Close(); err != nil {
			t.Errorf("Close() #%d error: %v", i+1, err)
		}
	}
}

func testListingOrder(t *testing.T, h Harness) {
	s := open(t, h)
	var want []eventagg.Event
	for _, batch := range [][]eventagg.Event{
		{ev("b", "3"), ev("a", "1")},
		{ev("a", "2"), ev("b", "3"), ev("c", "0")},
		{ev("a", "0")},
	} {
		outcomes := appendOK(t, s, batch)
		for i, e := range batch {
			if outcomes[i].Status == eventagg.Stored {
				want = append(want, e)
			}
		}
	}
	got := list(t, s, eventagg.Query{})
	diffEvents(t, "Events", want, got)
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Errorf("Seq not increasing: event %d has %d after %d", i, got[i].Seq, got[i-1].Seq)
		}
	}
	if len(got) > 0 && got[0].Seq <= 0 {
		t.Errorf("first Seq = %d, want positive", got[0].Seq)
	}
}

func testTopicFilter(t *testing.T, h Harness) {
	s := open(t, h)
	appendOK(t, s, []eventagg.Event{ev("a", "1"), ev("b", "1"), ev("a", "2"), ev("ab", "3"), ev("b", "4")})
	diffEvents(t, "Events(topic=a)", []eventagg.Event{ev("a", "1"), ev("a", "2")}, list(t, s, eventagg.Query{Topic: "a"}))
	diffEvents(t, "Events(topic=b)", []eventagg.Event{ev("b", "1"), ev("b", "4")}, list(t, s, eventagg.Query{Topic: "b"}))
	if got := list(t, s, eventagg.Query{Topic: "missing"}); len(got) != 0 {
		t.Errorf("Events(topic=missing) = %d events, want 0", len(got))
	}
}

func testCursorPagination(t *testing.T, h Harness) {
	s := open(t, h)
	var all []eventagg.Event
	for i := range 5 { // several appends, interleaving two topics
		batch := append(numbered("a", i*10, 5), numbered("b", i*10, 4)...)
		appendOK(t, s, batch)
		all = append(all, batch...)
	}
	for _, q := range []eventagg.Query{{Limit: 1}, {Limit: 7}, {Limit: 45}, {Limit: 100}, {Topic: "b", Limit: 3}} {
		t.Run(fmt.Sprintf("topic=%q,limit=%d", q.Topic, q.Limit), func(t *testing.T) {
			var got []eventagg.Event
			for pages := 0; ; pages++ {
				if pages > len(all) {
					t.Fatal("pagination does not end")
				}
				page := list(t, s, q)
				if len(page) > q.Limit {
					t.Fatalf("page of %d events, over the limit %d", len(page), q.Limit)
				}
				got = append(got, page...)
				if len(page) < q.Limit {
					break
				}
				q.After = page[len(page)-1].Seq
			}
			var want []eventagg.Event
			for _, e := range all {
				if q.Topic == "" || e.Topic == q.Topic {
					want = append(want, e)
				}
			}
			diffEvents(t, "paged Events", want, got)
		})
	}
	// After the last Seq there is nothing.
	everything := list(t, s, eventagg.Query{})
	if got := list(t, s, eventagg.Query{After: everything[len(everything)-1].Seq}); len(got) != 0 {
		t.Errorf("Events(after last Seq) = %d events, want 0", len(got))
	}
}

func testListingSpansManyPages(t *testing.T, h Harness) {
	s := open(t, h)
	in := numbered("bulk", 0, 1500)
	appendOK(t, s, in)
	appendOK(t, s, numbered("other", 0, 10))
	diffEvents(t, "Events(topic=bulk)", in, list(t, s, eventagg.Query{Topic: "bulk"}))
	diffEvents(t, "Events(limit=1200)", in[:1200], list(t, s, eventagg.Query{Limit: 1200}))
	if got := list(t, s, eventagg.Query{}); len(got) != 1510 {
		t.Errorf("Events() = %d events, want 1510", len(got))
	}
}

// testListingOfLargePayloads lists events whose payloads fill pages by
// bytes before they fill them by count (see eventagg.PageBytes).
func testListingOfLargePayloads(t *testing.T, h Harness) {
	s := open(t, h)
	var in []eventagg.Event
	for i := range 10 {
		e := ev("big", strconv.Itoa(i))
		e.Payload = json.RawMessage(`"` + strings.Repeat(strconv.Itoa(i), eventagg.PageBytes/3) + `"`)
		in = append(in, e)
	}
	appendOK(t, s, in)
	// Compared by hand: go-cmp is slow on megabytes of payload.
	check := func(q eventagg.Query, want []eventagg.Event) {
		t.Helper()
		got := list(t, s, q)
		if len(got) != len(want) {
			t.Fatalf("Events(%+v) = %d events, want %d", q, len(got), len(want))
		}
		for i := range got {
			if got[i].Key() != want[i].Key() || !bytes.Equal(got[i].Payload, want[i].Payload) || (i > 0 && got[i].Seq <= got[i-1].Seq) {
				t.Errorf("Events(%+v) event %d = %v (seq %d, %d payload bytes), want %v (%d bytes), in seq order",
					q, i, got[i].Key(), got[i].Seq, len(got[i].Payload), want[i].Key(), len(want[i].Payload))
			}
		}
	}
	check(eventagg.Query{}, in)
	check(eventagg.Query{Limit: 5}, in[:5])
	check(eventagg.Query{Topic: "big", Limit: 7}, in[:7])
	fourth := list(t, s, eventagg.Query{Limit: 4})[3]
	check(eventagg.Query{After: fourth.Seq}, in[4:])
}

// testQueryStatsPages reads the counters a page of topics at a time, for a
// store that implements eventagg.StatsQuerier, and checks the pages against
// Stats.
func testQueryStatsPages(t *testing.T, h Harness) {
	store := open(t, h)
	s, ok := store.(interface {
		eventagg.Store
		eventagg.StatsQuerier
	})
	if !ok {
		t.Skip("the store does not implement eventagg.StatsQuerier")
	}
	for i := range 25 {
		topic := fmt.Sprintf("topic-%02d", i)
		appendOK(t, s, append(numbered(topic, 0, 1+i%3), ev(topic, "0")))
	}
	all := stats(t, s)
	totals, err := s.QueryStats(t.Context(), eventagg.StatsQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if totals.Counts != all.Counts || totals.TopicCount != 25 || len(totals.Topics) != 0 {
		t.Errorf("QueryStats({}) = %+v, %d topics of %d; want the totals %+v, 25 topics counted, none listed",
			totals.Counts, len(totals.Topics), totals.TopicCount, all.Counts)
	}
	paged := map[string]eventagg.Counts{}
	after := ""
	for pages := 0; ; pages++ {
		st, err := s.QueryStats(t.Context(), eventagg.StatsQuery{TopicsAfter: after, TopicsLimit: 7})
		if err != nil {
			t.Fatal(err)
		}
		if st.Counts != all.Counts || st.TopicCount != 25 {
			t.Errorf("page %d totals = %+v, %d topics; want %+v, 25", pages, st.Counts, st.TopicCount, all.Counts)
		}
		if len(st.Topics) > 7 {
			t.Fatalf("page %d holds %d topics, over the limit of 7", pages, len(st.Topics))
		}
		if len(st.Topics) == 0 {
			break
		}
		prev := after
		for name, c := range st.Topics {
			if name <= prev {
				t.Errorf("page after %q holds %q", prev, name)
			}
			if _, dup := paged[name]; dup {
				t.Errorf("topic %q is on two pages", name)
			}
			paged[name] = c
			after = max(after, name)
		}
		if pages > 25 {
			t.Fatal("paging does not end")
		}
	}
	if diff := cmp.Diff(all.Topics, paged); diff != "" {
		t.Errorf("the pages of QueryStats differ from Stats (-Stats +pages):\n%s", diff)
	}
	s.Close()
	if _, err := s.QueryStats(t.Context(), eventagg.StatsQuery{TopicsLimit: 1}); !errors.Is(err, eventagg.ErrClosed) {
		t.Errorf("QueryStats after Close error = %v, want ErrClosed", err)
	}
}

func testEarlyBreak(t *testing.T, h Harness) {
	s := open(t, h)
	appendOK(t, s, numbered("t", 0, 1200))
	// Breaking must release what the listing holds: do it more times than any
	// reasonable connection pool is large, then use the store.
	for i := range 20 {
		n := 0
		for _, err := range s.Events(t.Context(), eventagg.Query{}) {
			if err != nil {
				t.Fatalf("Events() error: %v", err)
			}
			n++
			if n == i+1 {
				break
			}
		}
		if n != i+1 {
			t.Fatalf("listing stopped after %d events, want %d", n, i+1)
		}
	}
	diffOutcomes(t, "Append after breaks", "S", appendOK(t, s, evs("t", "5000")))
	if got := stats(t, s).UniqueProcessed; got != 1201 {
		t.Errorf("UniqueProcessed = %d, want 1201", got)
	}
}

func testListingIsReRunnable(t *testing.T, h Harness) {
	s := open(t, h)
	appendOK(t, s, evs("t", "1", "2"))
	seq := s.Events(t.Context(), eventagg.Query{})
	collect := func() []eventagg.Event {
		var out []eventagg.Event
		for e, err := range seq {
			if err != nil {
				t.Fatalf("Events() error: %v", err)
			}
			out = append(out, e)
		}
		return out
	}
	first := collect()
	appendOK(t, s, evs("t", "3"))
	diffEvents(t, "first run", evs("t", "1", "2"), first)
	diffEvents(t, "second run (reads afresh)", evs("t", "1", "2", "3"), collect())
}

func testListingCancelled(t *testing.T, h Harness) {
	s := open(t, h)
	appendOK(t, s, numbered("t", 0, 10))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var errs []error
	for _, err := range s.Events(ctx, eventagg.Query{}) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
		t.Errorf("Events(cancelled ctx) yielded %v, want one context.Canceled", errs)
	}
}

func testConcurrentOverlap(t *testing.T, h Harness) {
	s := open(t, h)
	const (
		workers = 8
		batches = 6
		size    = 10
		keys    = 60 // every worker draws from the same keys
	)
	var (
		mu      sync.Mutex
		stored  = make(map[eventagg.Key]int)
		offered int
		wg      sync.WaitGroup
		errs    = make(chan error, workers)
	)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range batches {
				batch := make([]eventagg.Event, size)
				for i := range batch {
					batch[i] = ev([]string{"x", "y"}[rng.IntN(2)], strconv.Itoa(rng.IntN(keys)))
				}
				outcomes, err := s.Append(context.Background(), batch, eventagg.AppendOptions{})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				offered += len(batch)
				for i, e := range batch {
					if outcomes[i].Status == eventagg.Stored {
						stored[e.Key()]++
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Append error: %v", err)
	}
	for k, n := range stored {
		if n != 1 {
			t.Errorf("key %v reported new %d times, want once", k, n)
		}
	}
	got := list(t, s, eventagg.Query{})
	if len(got) != len(stored) {
		t.Errorf("Events() = %d events, but Append reported %d new", len(got), len(stored))
	}
	listed := make(map[eventagg.Key]bool)
	for _, e := range got {
		if listed[e.Key()] {
			t.Errorf("key %v listed twice", e.Key())
		}
		listed[e.Key()] = true
	}
	st := stats(t, s)
	want := counts(int64(offered), int64(len(stored)), int64(offered-len(stored)))
	if diff := cmp.Diff(want, st.Counts); diff != "" {
		t.Errorf("Stats() totals mismatch (-want +got):\n%s", diff)
	}
}

func testCountersInvariant(t *testing.T, h Harness) {
	s := open(t, h)
	rng := rand.New(rand.NewPCG(7, 7))
	for range 20 {
		batch := make([]eventagg.Event, 1+rng.IntN(20))
		for i := range batch {
			batch[i] = ev("t"+strconv.Itoa(rng.IntN(3)), strconv.Itoa(rng.IntN(50)))
		}
		appendOK(t, s, batch)
		checkInvariant(t, s)
	}
}

// checkInvariant checks, per topic and overall, that received equals unique
// plus duplicates and that unique equals the number of stored events.
func checkInvariant(t *testing.T, s eventagg.Store) {
	t.Helper()
	st := stats(t, s)
	perTopic := make(map[string]int64)
	for _, e := range list(t, s, eventagg.Query{}) {
		perTopic[e.Topic]++
	}
	var total eventagg.Counts
	for topic, c := range st.Topics {
		if c.Received != c.UniqueProcessed+c.DuplicateDropped {
			t.Errorf("topic %q: received %d != unique %d + duplicates %d", topic, c.Received, c.UniqueProcessed, c.DuplicateDropped)
		}
		if c.Conflicts < 0 || c.Conflicts > c.DuplicateDropped {
			t.Errorf("topic %q: conflicts %d, with %d duplicates", topic, c.Conflicts, c.DuplicateDropped)
		}
		if c.UniqueProcessed != c.Stored+c.Expired {
			t.Errorf("topic %q: unique_processed %d != stored %d + expired %d", topic, c.UniqueProcessed, c.Stored, c.Expired)
		}
		if c.Stored != perTopic[topic] {
			t.Errorf("topic %q: stored %d, but %d events listed", topic, c.Stored, perTopic[topic])
		}
		total.Add(c)
	}
	if total != st.Counts {
		t.Errorf("Stats totals %+v are not the sums of the topics %+v", st.Counts, total)
	}
	if st.Received != st.UniqueProcessed+st.DuplicateDropped {
		t.Errorf("received %d != unique %d + duplicates %d", st.Received, st.UniqueProcessed, st.DuplicateDropped)
	}
}

func testSurvivesReopen(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("the store cannot reopen (Harness.Reopen is nil)")
	}
	s := h.Open(t)
	appendOK(t, s, evs("a", "1", "2", "1"))
	appendOK(t, s, evs("b", "1"))
	before := list(t, s, eventagg.Query{})
	beforeStats := stats(t, s)

	s = h.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	after := list(t, s, eventagg.Query{})
	if diff := cmp.Diff(before, after, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Events after reopen mismatch (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(beforeStats, stats(t, s)); diff != "" {
		t.Errorf("Stats after reopen mismatch (-before +after):\n%s", diff)
	}
	// Deduplication spans the restart, and sequence numbers keep growing.
	diffOutcomes(t, "Append after reopen", "DSD", appendOK(t, s, evs("a", "2", "3", "1")))
	last := list(t, s, eventagg.Query{After: before[len(before)-1].Seq})
	diffEvents(t, "Events after the last Seq before reopen", evs("a", "3"), last)
	checkInvariant(t, s)
}

// withPayload returns e with payload p (none if p is empty).
func withPayload(e eventagg.Event, p string) eventagg.Event {
	e.Payload = nil
	if p != "" {
		e.Payload = json.RawMessage(p)
	}
	return e
}

func testConflictWithinCall(t *testing.T, h Harness) {
	s := open(t, h)
	a := ev("orders", "1")
	in := []eventagg.Event{a, withPayload(a, `{"id":"other"}`), a, withPayload(a, ""), ev("orders", "2")}
	diffOutcomes(t, "Append", "SCDCS", appendOK(t, s, in))
	diffEvents(t, "Events", []eventagg.Event{a, in[4]}, list(t, s, eventagg.Query{}))
}

func testConflictAcrossCalls(t *testing.T, h Harness) {
	s := open(t, h)
	a, b := ev("orders", "1"), withPayload(ev("orders", "2"), "")
	appendOK(t, s, []eventagg.Event{a, b})
	diffOutcomes(t, "resend with other payloads", "CC", appendOK(t, s, []eventagg.Event{
		withPayload(a, `{"id":"1" }`), // one more space is another payload
		withPayload(b, `null`),        // a payload where there was none
	}))
	diffOutcomes(t, "resend as stored", "DD", appendOK(t, s, []eventagg.Event{a, b}))
	// The first copies stay as they were.
	diffEvents(t, "Events", []eventagg.Event{a, b}, list(t, s, eventagg.Query{}))
}

func testIdenticalCopyIsNotConflict(t *testing.T, h Harness) {
	s := open(t, h)
	a := ev("t", "1")
	other := a
	other.Source = "another-source"       // only the payload is compared
	other.Timestamp = base.Add(time.Hour) // (a resend is often stamped anew)
	none := withPayload(ev("t", "2"), "")
	big := withPayload(ev("t", "3"), `"`+strings.Repeat("b", 100<<10)+`"`)
	appendOK(t, s, []eventagg.Event{a, none, big})
	diffOutcomes(t, "resend", "DDD", appendOK(t, s, []eventagg.Event{other, none, big}))
	bigger := withPayload(big, `"`+strings.Repeat("b", 100<<10)+`b"`)
	diffOutcomes(t, "resend of a large payload with one more byte", "C", appendOK(t, s, []eventagg.Event{bigger}))
}

func testConflictCounters(t *testing.T, h Harness) {
	s := open(t, h)
	a, b := ev("a", "1"), ev("b", "1")
	appendOK(t, s, []eventagg.Event{a, b, withPayload(a, `1`)})
	appendOK(t, s, []eventagg.Event{a, withPayload(b, `2`), withPayload(b, `3`), ev("b", "2")})
	diffStats(t, map[string]eventagg.Counts{
		"a": {Received: 3, UniqueProcessed: 1, DuplicateDropped: 2, Conflicts: 1, Stored: 1},
		"b": {Received: 4, UniqueProcessed: 2, DuplicateDropped: 2, Conflicts: 2, Stored: 2},
	}, stats(t, s))
	checkInvariant(t, s)
}

func testRejectConflicts(t *testing.T, h Harness) {
	s := open(t, h)
	a := ev("orders", "1")
	appendOK(t, s, []eventagg.Event{a})
	reject := eventagg.AppendOptions{RejectConflicts: true}
	for _, tt := range []struct {
		name  string
		batch []eventagg.Event
		index int
	}{
		{"AcrossCalls", []eventagg.Event{ev("orders", "2"), a, withPayload(a, `{}`), ev("new", "1")}, 2},
		{"WithinCall", []eventagg.Event{ev("orders", "3"), withPayload(ev("orders", "3"), `[]`)}, 1},
	} {
		outcomes, err := s.Append(t.Context(), tt.batch, reject)
		var ce *eventagg.ConflictError
		if !errors.As(err, &ce) || !errors.Is(err, eventagg.ErrConflict) || ce.Index != tt.index || ce.Key != tt.batch[tt.index].Key() {
			t.Errorf("%s: Append = %v, %v; want a *ConflictError for event %d (%v)", tt.name, outcomes, err, tt.index, tt.batch[tt.index].Key())
		}
	}
	// Nothing of the refused batches was stored or counted.
	diffEvents(t, "Events", []eventagg.Event{a}, list(t, s, eventagg.Query{}))
	diffStats(t, map[string]eventagg.Counts{"orders": counts(1, 1, 0)}, stats(t, s))
	// Without a conflict, a batch goes through as usual, duplicates and all.
	outcomes, err := s.Append(t.Context(), []eventagg.Event{a, ev("orders", "2")}, reject)
	if err != nil {
		t.Fatalf("Append without a conflict, rejecting conflicts: %v", err)
	}
	diffOutcomes(t, "Append without a conflict", "DS", outcomes)
}

func testStoredOutcomesCarrySeq(t *testing.T, h Harness) {
	s := open(t, h)
	seqs := map[eventagg.Key]int64{}
	for _, batch := range [][]eventagg.Event{evs("t", "1", "2", "1"), evs("t", "3", "2"), evs("u", "1")} {
		for i, o := range appendOK(t, s, batch) {
			if o.Status == eventagg.Stored {
				seqs[batch[i].Key()] = o.Seq
			}
		}
	}
	listed := list(t, s, eventagg.Query{})
	if len(listed) != len(seqs) {
		t.Fatalf("%d events listed, %d reported stored", len(listed), len(seqs))
	}
	for _, e := range listed {
		if seqs[e.Key()] != e.Seq {
			t.Errorf("event %v is listed with Seq %d, but Append reported %d", e.Key(), e.Seq, seqs[e.Key()])
		}
	}
}

// expirer returns s as an eventagg.Expirer, or skips the test.
func expirer(t *testing.T, s eventagg.Store) eventagg.Expirer {
	t.Helper()
	x, ok := s.(eventagg.Expirer)
	if !ok {
		t.Skip("the store does not implement eventagg.Expirer")
	}
	return x
}

// t0 is the acceptance time of the first events of the retention subtests.
var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// appendAt appends events accepted at the given time.
func appendAt(t *testing.T, s eventagg.Store, at time.Time, events []eventagg.Event) []eventagg.Outcome {
	t.Helper()
	outcomes, err := s.Append(t.Context(), events, eventagg.AppendOptions{AcceptedAt: at})
	if err != nil {
		t.Fatalf("Append(%d events at %v) error: %v", len(events), at, err)
	}
	return outcomes
}

// expire runs Expire and fails the test on an error.
func expire(t *testing.T, x eventagg.Expirer, q eventagg.ExpireQuery) eventagg.ExpireResult {
	t.Helper()
	res, err := x.Expire(t.Context(), q)
	if err != nil {
		t.Fatalf("Expire(%+v) error: %v", q, err)
	}
	return res
}

func testExpiryByWindow(t *testing.T, h Harness) {
	s := open(t, h)
	x := expirer(t, s)
	appendAt(t, s, t0, evs("a", "1", "2"))
	appendAt(t, s, t0.Add(time.Second), evs("b", "1"))
	appendAt(t, s, t0.Add(2*time.Second), evs("a", "3"))
	if res := expire(t, x, eventagg.ExpireQuery{PayloadsBefore: t0, Limit: 100}); res != (eventagg.ExpireResult{}) {
		t.Errorf("Expire before the oldest event = %+v, want nothing removed", res)
	}
	res := expire(t, x, eventagg.ExpireQuery{PayloadsBefore: t0.Add(1500 * time.Millisecond), Limit: 100})
	if res.Events != 3 || res.Keys != 3 || res.More {
		t.Errorf("Expire = %+v, want the 3 events accepted before the window, with their keys, nothing more", res)
	}
	diffEvents(t, "Events after expiry", evs("a", "3"), list(t, s, eventagg.Query{}))
	diffStats(t, map[string]eventagg.Counts{
		"a": {Received: 3, UniqueProcessed: 3, Stored: 1, Expired: 2},
		"b": {Received: 1, UniqueProcessed: 1, Expired: 1},
	}, stats(t, s))
	if res := expire(t, x, eventagg.ExpireQuery{PayloadsBefore: t0.Add(1500 * time.Millisecond), Limit: 100}); res != (eventagg.ExpireResult{}) {
		t.Errorf("Expire again = %+v, want nothing left to remove", res)
	}
	checkInvariant(t, s)
}

func testExpiryInChunks(t *testing.T, h Harness) {
	s := open(t, h)
	x := expirer(t, s)
	appendAt(t, s, t0, numbered("t", 0, 7))
	removed := 0
	for calls := 1; ; calls++ {
		res := expire(t, x, eventagg.ExpireQuery{PayloadsBefore: t0.Add(time.Second), Limit: 3})
		if res.Events > 3 || res.Keys > 3 {
			t.Fatalf("Expire with Limit 3 = %+v", res)
		}
		removed += res.Events
		if !res.More {
			break
		}
		if calls > 5 {
			t.Fatal("Expire keeps saying there is more")
		}
	}
	if removed != 7 || len(list(t, s, eventagg.Query{})) != 0 {
		t.Errorf("chunks removed %d events, want all 7", removed)
	}
	checkInvariant(t, s)
}

func testKeyReuseAfterExpiry(t *testing.T, h Harness) {
	s := open(t, h)
	x := expirer(t, s)
	first := appendAt(t, s, t0, evs("t", "1", "2"))
	expire(t, x, eventagg.ExpireQuery{PayloadsBefore: t0.Add(time.Second), Limit: 100})
	// Every event left: a copy of one is new, and numbers never go back.
	again := appendAt(t, s, t0.Add(2*time.Second), []eventagg.Event{withPayload(ev("t", "1"), `"changed"`), ev("t", "3")})
	diffOutcomes(t, "Append after expiry", "SS", again)
	if again[0].Seq <= first[1].Seq {
		t.Errorf("a copy stored after expiry got Seq %d, not above %d: sequence numbers went back", again[0].Seq, first[1].Seq)
	}
	diffEvents(t, "Events", []eventagg.Event{withPayload(ev("t", "1"), `"changed"`), ev("t", "3")}, list(t, s, eventagg.Query{}))
	diffStats(t, map[string]eventagg.Counts{"t": {Received: 4, UniqueProcessed: 4, Stored: 2, Expired: 2}}, stats(t, s))
}

func testDedupWindowOutlivesEvents(t *testing.T, h Harness) {
	s := open(t, h)
	x := expirer(t, s)
	appendAt(t, s, t0, evs("t", "1", "2"))
	appendAt(t, s, t0.Add(time.Minute), evs("t", "3"))
	// Events accepted before t0+2m leave; their keys stay if accepted at or after t0.
	keep := eventagg.ExpireQuery{PayloadsBefore: t0.Add(2 * time.Minute), KeysBefore: t0, Limit: 100}
	if res := expire(t, x, keep); res.Events != 3 || res.Keys != 0 {
		t.Errorf("Expire keeping keys = %+v, want 3 events and no key removed", res)
	}
	if got := list(t, s, eventagg.Query{}); len(got) != 0 {
		t.Errorf("%d events listed after they left, want none", len(got))
	}
	// The keys judge later copies as if the events were there.
	diffOutcomes(t, "copies within the dedup window", "DCD", appendAt(t, s, t0.Add(3*time.Minute),
		[]eventagg.Event{ev("t", "1"), withPayload(ev("t", "2"), `"other"`), ev("t", "3")}))
	diffStats(t, map[string]eventagg.Counts{"t": {Received: 6, UniqueProcessed: 3, DuplicateDropped: 3, Conflicts: 1, Expired: 3}}, stats(t, s))
	// The keys accepted before t0+30s leave; the one accepted at t0+1m stays.
	if res := expire(t, x, eventagg.ExpireQuery{PayloadsBefore: t0.Add(2 * time.Minute), KeysBefore: t0.Add(30 * time.Second), Limit: 100}); res.Events != 0 || res.Keys != 2 {
		t.Errorf("Expire of the keys = %+v, want 2 keys removed", res)
	}
	diffOutcomes(t, "copies after the dedup window", "SD", appendAt(t, s, t0.Add(4*time.Minute), evs("t", "1", "3")))
	checkInvariant(t, s)
}

func testCursorOverExpired(t *testing.T, h Harness) {
	s := open(t, h)
	x := expirer(t, s)
	old := appendAt(t, s, t0, evs("t", "1", "2", "3"))
	appendAt(t, s, t0.Add(time.Minute), evs("t", "4", "5"))
	expire(t, x, eventagg.ExpireQuery{PayloadsBefore: t0.Add(time.Second), Limit: 100})
	// A reader paged as far as event 2 before it left goes on from the next one kept.
	diffEvents(t, "Events(after an expired event)", evs("t", "4", "5"), list(t, s, eventagg.Query{After: old[1].Seq}))
	diffEvents(t, "Events(topic, after an expired event)", evs("t", "4", "5"), list(t, s, eventagg.Query{Topic: "t", After: old[0].Seq, Limit: 10}))
}

func testExpiryCountersInvariant(t *testing.T, h Harness) {
	s := open(t, h)
	x := expirer(t, s)
	rng := rand.New(rand.NewPCG(11, 11))
	at := t0
	for i := range 30 {
		batch := make([]eventagg.Event, 1+rng.IntN(10))
		for j := range batch {
			batch[j] = ev("t"+strconv.Itoa(rng.IntN(3)), strconv.Itoa(rng.IntN(60)))
		}
		at = at.Add(time.Second)
		appendAt(t, s, at, batch)
		q := eventagg.ExpireQuery{PayloadsBefore: at.Add(-5 * time.Second), Limit: 1 + rng.IntN(4)}
		if i%2 == 1 {
			q.KeysBefore = at.Add(-10 * time.Second)
		}
		expire(t, x, q)
		checkInvariant(t, s)
	}
}

func testExpirySurvivesReopen(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("the store cannot reopen (Harness.Reopen is nil)")
	}
	s := h.Open(t)
	x := expirer(t, s)
	appendAt(t, s, t0, evs("t", "1", "2", "3"))
	appendAt(t, s, t0.Add(time.Minute), evs("t", "4"))
	// A chunk of the expiry, then a restart before the rest (as after a crash).
	expire(t, x, eventagg.ExpireQuery{PayloadsBefore: t0.Add(time.Second), KeysBefore: t0.Add(-time.Second), Limit: 2})
	before, beforeStats := list(t, s, eventagg.Query{}), stats(t, s)
	s = h.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	diffEvents(t, "Events after reopen", before, list(t, s, eventagg.Query{}))
	if diff := cmp.Diff(beforeStats, stats(t, s)); diff != "" {
		t.Errorf("Stats after reopen (-before +after):\n%s", diff)
	}
	diffOutcomes(t, "a copy of a kept key after reopen", "D", appendAt(t, s, t0.Add(2*time.Minute), evs("t", "1")))
	x = expirer(t, s)
	if res := expire(t, x, eventagg.ExpireQuery{PayloadsBefore: t0.Add(time.Second), Limit: 100}); res.Events != 1 {
		t.Errorf("the rest of the expiry after reopen = %+v, want the 1 event left", res)
	}
	diffEvents(t, "Events", evs("t", "4"), list(t, s, eventagg.Query{}))
	checkInvariant(t, s)
}
