package postgres_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/postgres"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

// TestListingsWaitForAppendsInFlight holds replica A's Append of a/1 in
// flight (its counter row locked) after it drew its Seq, while replica B
// stores b/1, with a higher Seq, and commits. A listing must not show b/1
// while a/1 may still commit below it: it shows a/0 only, counts the
// store held back, and Watch wakes its callers meanwhile. An Append held
// on another schema holds nothing back. Once A commits, the listing shows
// all three, in Seq order, and the store is no longer held back.
func TestListingsWaitForAppendsInFlight(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	q := pgx.Identifier{schema}.Sanitize()
	a, b := openOneShard(t, dsn, schema), openOneShard(t, dsn, schema)
	appendStatuses(t, a, event("a", "0"))

	// An Append in flight on another schema.
	other := newSchema(t, dsn)
	o := openOneShard(t, dsn, other)
	appendStatuses(t, o, event("a", "0"))
	otherBlocker, fromOther := holdAppend(t, dsn, pgx.Identifier{other}.Sanitize(), o, event("a", "1"))
	appendStatuses(t, b, event("b", "0"))
	if diff := cmp.Diff([]string{"a/0", "b/0"}, keys(listAll(t, b, eventagg.Query{}))); diff != "" {
		t.Errorf("Events() while another schema's Append is in flight (-want +got):\n%s", diff)
	}
	if held := heldBack(b); held != 0 {
		t.Errorf("held back = %v by another schema's Append, want 0", held)
	}
	otherBlocker.Rollback(context.Background())
	if r := <-fromOther; r.err != nil {
		t.Fatalf("other schema's Append error: %v", r.err)
	}

	blocker, fromA := holdAppend(t, dsn, q, a, event("a", "1"))
	appendStatuses(t, b, event("b", "1"))

	var woken atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	watched := make(chan error, 1)
	go func() { watched <- b.Watch(ctx, func() { woken.Add(1) }) }()
	defer func() {
		cancel()
		<-watched
	}()

	if diff := cmp.Diff([]string{"a/0", "b/0"}, keys(listAll(t, b, eventagg.Query{}))); diff != "" {
		t.Errorf("Events() while A's Append is in flight (-want +got):\n%s", diff)
	}
	// Held back already, a listing waits 20ms at most, not a second: half
	// of that bounds it.
	short, cancelShort := context.WithTimeout(t.Context(), 500*time.Millisecond)
	var topicB []eventagg.Event
	for e, err := range b.Events(short, eventagg.Query{Topic: "b"}) {
		if err != nil {
			t.Fatalf("Events(topic b) while held back: %v", err)
		}
		topicB = append(topicB, e)
	}
	cancelShort()
	if diff := cmp.Diff([]string{"b/0"}, keys(topicB)); diff != "" {
		t.Errorf("Events(topic b) while A's Append is in flight (-want +got):\n%s", diff)
	}
	if held := heldBack(b); held != 1 {
		t.Errorf("held back = %v while A's Append is in flight, want 1", held)
	}
	// Watch calls changed once as it starts listening, then every 50ms
	// while listings are held back.
	deadline := time.Now().Add(awaitTimeout)
	for woken.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("Watch woke its caller %d times while listings were held back, want at least 3", woken.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}

	blocker.Rollback(context.Background())
	r := <-fromA
	if r.err != nil {
		t.Fatalf("A's Append error: %v", r.err)
	}
	got := listAll(t, b, eventagg.Query{})
	if diff := cmp.Diff([]string{"a/0", "b/0", "a/1", "b/1"}, keys(got)); diff != "" {
		t.Errorf("Events() after A's commit (-want +got):\n%s", diff)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Errorf("Events() not in Seq order: %d after %d", got[i].Seq, got[i-1].Seq)
		}
	}
	if got[2].Seq != r.outcomes[0].Seq {
		t.Errorf("a/1 listed with Seq %d, its Append said %d", got[2].Seq, r.outcomes[0].Seq)
	}
	if held := heldBack(b); held != 0 {
		t.Errorf("held back = %v after A's commit, want 0", held)
	}
}

// TestExpireStopsAtAppendsInFlight checks that Expire, like a listing,
// removes no event above an Append in flight: B's event, committed above
// A's in-flight one, stays until A ends, so that what has left stays a
// prefix of the Seqs and A's event is not lost behind it; and that Expire
// does not wait for A meanwhile. Once A has committed, the next Expire
// removes the rest.
func TestExpireStopsAtAppendsInFlight(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	q := pgx.Identifier{schema}.Sanitize()
	a, b := openOneShard(t, dsn, schema), openOneShard(t, dsn, schema)
	appendStatuses(t, a, event("a", "0"))
	listAll(t, b, eventagg.Query{}) // B's watermark passes a/0
	blocker, fromA := holdAppend(t, dsn, q, a, event("a", "1"))
	appendStatuses(t, b, event("b", "1"))

	// Expire removes a/0 only: the events up to the last watermark B
	// found, which A's Append in flight holds back.
	all := eventagg.ExpireQuery{PayloadsBefore: time.Now().Add(time.Hour), KeysBefore: time.Now().Add(time.Hour), Limit: 100}
	// Expire runs on the Aggregator's writer: it must not wait for A, as
	// a listing would for up to a second. Half of that bounds it.
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	res, err := b.Expire(ctx, all)
	cancel()
	if err != nil {
		t.Fatalf("Expire() error: %v", err)
	}
	if res.Events != 1 {
		t.Errorf("Expire() while A's Append is in flight removed %d events, want 1 (a/0)", res.Events)
	}
	blocker.Rollback(context.Background())
	if r := <-fromA; r.err != nil {
		t.Fatalf("A's Append error: %v", r.err)
	}
	if diff := cmp.Diff([]string{"a/1", "b/1"}, keys(listAll(t, b, eventagg.Query{}))); diff != "" {
		t.Errorf("Events() after A's commit (-want +got):\n%s", diff)
	}
	if res, err = b.Expire(t.Context(), all); err != nil || res.Events != 2 {
		t.Errorf("Expire() after A's commit = %+v, %v; want 2 events removed", res, err)
	}
}

// keys returns topic/event_id of each event.
func keys(events []eventagg.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = fmt.Sprintf("%s/%s", e.Topic, e.EventID)
	}
	return out
}

// heldBack returns the store's eventagg_postgres_listings_held_back.
func heldBack(s *postgres.Store) float64 {
	for _, m := range s.StoreMetrics() {
		if m.Name == "eventagg_postgres_listings_held_back" {
			return m.Value
		}
	}
	return -1
}

// holdAppend starts an Append of e to s, on schema q (quoted), and holds
// it in flight, after it drew its Seq, by locking its topic's counter
// rows; it returns the transaction holding them (roll it back to release
// the Append) and the Append's result.
func holdAppend(t *testing.T, dsn, q string, s eventagg.Store, e eventagg.Event) (pgx.Tx, chan appendResult) {
	t.Helper()
	blocker := lockCounters(t, dsn, q, e.Topic)
	result := appendAsync(t, s, e)
	awaitWaiting(t, dsn, "%"+q+"%")
	return blocker, result
}
