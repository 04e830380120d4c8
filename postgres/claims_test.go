package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/postgres"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

// claimAt is the clock of the claim tests: claims take it explicitly.
var claimAt = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// claim claims key on c and fails tb unless the status is want.
func claim(tb testing.TB, c eventagg.Claimer, key eventagg.Key, lease time.Duration, now time.Time, want eventagg.ClaimStatus) eventagg.Claim {
	tb.Helper()
	cl, err := c.Claim(tb.Context(), key, lease, now)
	if err != nil {
		tb.Fatalf("Claim(%v) error: %v", key, err)
	}
	if cl.Status != want {
		tb.Fatalf("Claim(%v) = %+v, want %v", key, cl, want)
	}
	return cl
}

// claimCounts returns c's ClaimCounts at now and fails tb on error.
func claimCounts(tb testing.TB, c eventagg.Claimer, now time.Time) eventagg.ClaimCounts {
	tb.Helper()
	cc, err := c.ClaimCounts(tb.Context(), now)
	if err != nil {
		tb.Fatalf("ClaimCounts error: %v", err)
	}
	return cc
}

// TestClaimsConcurrentAcrossReplicas claims each of a few keys from many
// goroutines on two Stores (two pools, as two replicas) at once: exactly
// one claim of each key is Claimed, the others Busy until the lease of the
// one that was; once it completes, every replica finds the key Done.
func TestClaimsConcurrentAcrossReplicas(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	replicas := []*postgres.Store{MustOpen(t, dsn, schema), MustOpen(t, dsn, schema)}
	const (
		keys    = 10
		workers = 8 // per replica
	)
	type answer struct {
		replica int
		claim   eventagg.Claim
	}
	var (
		mu      sync.Mutex
		answers = make(map[eventagg.Key][]answer)
		wg      sync.WaitGroup
		start   = make(chan struct{})
	)
	for r, s := range replicas {
		for range workers {
			wg.Go(func() {
				<-start
				for k := range keys {
					key := eventagg.Key{Topic: "hooks", EventID: fmt.Sprint(k)}
					cl, err := s.Claim(t.Context(), key, time.Minute, claimAt)
					if err != nil {
						t.Errorf("replica %d: Claim(%v) error: %v", r, key, err)
						return
					}
					mu.Lock()
					answers[key] = append(answers[key], answer{r, cl})
					mu.Unlock()
				}
			})
		}
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	tokens := make(map[int64]bool)
	for k := range keys {
		key := eventagg.Key{Topic: "hooks", EventID: fmt.Sprint(k)}
		var claimed []answer
		for _, a := range answers[key] {
			switch a.claim.Status {
			case eventagg.Claimed:
				claimed = append(claimed, a)
			case eventagg.Busy:
				if !a.claim.Expires.Equal(claimAt.Add(time.Minute)) || a.claim.Token != 0 {
					t.Errorf("Busy claim of %v = %+v, want the holder's Expires %v and no token", key, a.claim, claimAt.Add(time.Minute))
				}
			default:
				t.Errorf("claim of %v = %+v, want Claimed or Busy", key, a.claim)
			}
		}
		if len(answers[key]) != 2*workers || len(claimed) != 1 {
			t.Fatalf("%d claims of %v from two replicas: %d Claimed, want %d claims and exactly one Claimed", len(answers[key]), key, len(claimed), 2*workers)
		}
		// The claimant completes on its replica; the other replica sees it.
		cl := claimed[0]
		if tokens[cl.claim.Token] {
			t.Errorf("claims of two keys have token %d", cl.claim.Token)
		}
		tokens[cl.claim.Token] = true
		o, err := replicas[cl.replica].Complete(t.Context(), cl.claim, event(key.Topic, key.EventID), eventagg.AppendOptions{})
		if err != nil || o.Status != eventagg.Stored {
			t.Fatalf("Complete(%+v) = %+v, %v; want Stored", cl.claim, o, err)
		}
		for _, s := range replicas {
			claim(t, s, key, time.Minute, claimAt.Add(time.Second), eventagg.Done)
		}
	}
	st, err := replicas[1].Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (eventagg.Counts{Received: keys, UniqueProcessed: keys, Stored: keys}); st.Counts != want {
		t.Errorf("Stats().Counts = %+v, want %+v", st.Counts, want)
	}
	for r, s := range replicas {
		if cc := claimCounts(t, s, claimAt.Add(time.Hour)); cc != (eventagg.ClaimCounts{}) {
			t.Errorf("replica %d: ClaimCounts = %+v after every claim completed, want none", r, cc)
		}
	}
}

// TestClaimFencingAcrossReplicas: replica A's claim lapses and replica B
// takes the key over; A's Complete and Release then fail with ErrClaimLost,
// storing and counting nothing, and B's Complete stores the event.
func TestClaimFencingAcrossReplicas(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	a, b := MustOpen(t, dsn, schema), MustOpen(t, dsn, schema)
	e := event("hooks", "1")

	stale := claim(t, a, e.Key(), time.Minute, claimAt, eventagg.Claimed)
	claim(t, b, e.Key(), time.Minute, claimAt.Add(30*time.Second), eventagg.Busy)
	// At the lease's end, B takes the key over.
	takeover := claimAt.Add(time.Minute)
	fresh := claim(t, b, e.Key(), time.Minute, takeover, eventagg.Claimed)
	if fresh.Token <= stale.Token {
		t.Errorf("B's token %d, want more than A's lapsed %d", fresh.Token, stale.Token)
	}
	for _, s := range []*postgres.Store{a, b} {
		if cc := claimCounts(t, s, takeover); cc != (eventagg.ClaimCounts{Active: 1, Expired: 1}) {
			t.Errorf("ClaimCounts after the takeover = %+v, want 1 active, 1 expired", cc)
		}
	}

	if o, err := a.Complete(t.Context(), stale, e, eventagg.AppendOptions{}); !errors.Is(err, eventagg.ErrClaimLost) {
		t.Fatalf("A's Complete of its lapsed, taken-over claim = %+v, %v; want ErrClaimLost", o, err)
	}
	if err := a.Release(t.Context(), stale); !errors.Is(err, eventagg.ErrClaimLost) {
		t.Fatalf("A's Release of its lapsed, taken-over claim = %v, want ErrClaimLost", err)
	}
	if got := listAll(t, a, eventagg.Query{}); len(got) != 0 {
		t.Fatalf("A's lost Complete stored %d events, want none", len(got))
	}
	st, err := b.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Counts != (eventagg.Counts{}) {
		t.Errorf("Stats().Counts after A's lost Complete = %+v, want nothing counted", st.Counts)
	}
	// B's claim is intact: still busy for A, and it completes.
	claim(t, a, e.Key(), time.Minute, takeover.Add(time.Second), eventagg.Busy)
	o, err := b.Complete(t.Context(), fresh, e, eventagg.AppendOptions{})
	if err != nil || o.Status != eventagg.Stored || o.Seq <= 0 {
		t.Fatalf("B's Complete = %+v, %v; want Stored with a Seq", o, err)
	}
	if diff := cmp.Diff([]eventagg.Event{{Seq: o.Seq, Topic: e.Topic, EventID: e.EventID, Timestamp: e.Timestamp, Payload: e.Payload}},
		listAll(t, a, eventagg.Query{})); diff != "" {
		t.Errorf("Events() on A after B's Complete (-want +got):\n%s", diff)
	}
	if _, err := a.Complete(t.Context(), stale, e, eventagg.AppendOptions{}); !errors.Is(err, eventagg.ErrClaimLost) {
		t.Errorf("A's Complete after B's = %v, want ErrClaimLost", err)
	}
	st, err = a.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (eventagg.Counts{Received: 1, UniqueProcessed: 1, Stored: 1}); st.Counts != want {
		t.Errorf("Stats().Counts = %+v, want %+v", st.Counts, want)
	}
	for _, s := range []*postgres.Store{a, b} {
		claim(t, s, e.Key(), time.Minute, takeover.Add(time.Hour), eventagg.Done)
		// The takeover stays counted once the claim that took over ended.
		if cc := claimCounts(t, s, takeover.Add(time.Hour)); cc != (eventagg.ClaimCounts{Expired: 1}) {
			t.Errorf("ClaimCounts after B's Complete = %+v, want 1 expired", cc)
		}
	}
}

// TestClaimWhileCompleting claims a key on replica B while replica A's
// Complete of it is under way: A has ended its claim and inserted the
// event in its transaction, and waits to add to its counter row, which
// the test holds locked (as a slow commit, or an Append of the same shard
// would make it wait). B's Claim waits for A's transaction and, once A
// commits, finds the key Done: not Claimed, which would have the work done
// again.
func TestClaimWhileCompleting(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	q := pgx.Identifier{schema}.Sanitize()
	var replicas [2]*postgres.Store
	for i := range replicas {
		// One counter shard per topic: the row the test locks is the one
		// A's Complete adds to.
		s, err := postgres.Open(t.Context(), dsn, &postgres.Options{Schema: schema, MaxConns: 4, CounterShards: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		replicas[i] = s
	}
	a, b := replicas[0], replicas[1]
	appendStatuses(t, a, event("hooks", "0")) // makes the topic's counter row
	e := event("hooks", "1")
	held := claim(t, a, e.Key(), time.Minute, claimAt, eventagg.Claimed)

	ctx, cancel := context.WithTimeout(t.Context(), awaitTimeout)
	defer cancel()
	blocker, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(context.Background())
	lock, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(context.Background())
	if _, err := lock.Exec(ctx, `SELECT FROM `+q+`.counters WHERE topic = 'hooks' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	type result struct {
		o   eventagg.Outcome
		cl  eventagg.Claim
		err error
	}
	completed, claimed := make(chan result, 1), make(chan result, 1)
	go func() {
		o, err := a.Complete(ctx, held, e, eventagg.AppendOptions{})
		completed <- result{o: o, err: err}
	}()
	awaitWaiting(t, dsn, "%INSERT INTO "+q+".counters%")
	go func() {
		cl, err := b.Claim(ctx, e.Key(), time.Minute, claimAt.Add(time.Second))
		claimed <- result{cl: cl, err: err}
	}()
	awaitWaiting(t, dsn, "%INSERT INTO "+q+".claims%")
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-completed; r.err != nil || r.o.Status != eventagg.Stored {
		t.Fatalf("A's Complete = %+v, %v; want Stored", r.o, r.err)
	}
	if r := <-claimed; r.err != nil || r.cl.Status != eventagg.Done {
		t.Fatalf("B's Claim during A's Complete = %+v, %v; want Done", r.cl, r.err)
	}
	if cc := claimCounts(t, b, claimAt.Add(time.Hour)); cc != (eventagg.ClaimCounts{}) {
		t.Errorf("ClaimCounts = %+v, want none: B's Claim was undone", cc)
	}
}

// awaitWaiting waits until a backend whose query is like pattern waits
// for a lock.
func awaitWaiting(t *testing.T, dsn, pattern string) {
	t.Helper()
	deadline := time.Now().Add(awaitTimeout)
	for {
		var n int
		query(t, dsn, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE `+quote(pattern), &n)
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			var dump string
			query(t, dsn, `SELECT string_agg(coalesce(wait_event_type,'-') || ' ' || state || ' ' || left(query, 60), E'\n') FROM pg_stat_activity WHERE backend_type = 'client backend'`, &dump)
			t.Log(dump)
			t.Fatalf("no query like %s waits for a lock after %v", pattern, awaitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClaimsOnceUnderLoad runs workers on two replicas that each try to
// process every one of a set of keys, in their own order, as a receiver
// of redeliveries would: claim, do the work, complete; come back to a Busy
// key later. Each key's work is done exactly once, and its event stored
// once.
func TestClaimsOnceUnderLoad(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	replicas := []*postgres.Store{MustOpen(t, dsn, schema), MustOpen(t, dsn, schema)}
	const (
		keys    = 40
		workers = 6 // per replica
	)
	var (
		mu   sync.Mutex
		work = make(map[eventagg.Key]int)
		wg   sync.WaitGroup
	)
	for w := range 2 * workers {
		s := replicas[w%2]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 15))
			pending := rng.Perm(keys)
			for len(pending) > 0 {
				k := pending[0]
				pending = pending[1:]
				e := event("hooks", fmt.Sprint(k))
				cl, err := s.Claim(t.Context(), e.Key(), time.Minute, time.Now())
				if err != nil {
					t.Errorf("Claim(%v) error: %v", e.Key(), err)
					return
				}
				switch cl.Status {
				case eventagg.Busy:
					pending = append(pending, k) // a redelivery, later
					continue
				case eventagg.Done:
					continue
				}
				mu.Lock()
				work[e.Key()]++
				mu.Unlock()
				if rng.IntN(4) == 0 { // the work failed: the next delivery redoes it
					mu.Lock()
					work[e.Key()]--
					mu.Unlock()
					if err := s.Release(t.Context(), cl); err != nil {
						t.Errorf("Release(%+v) error: %v", cl, err)
						return
					}
					pending = append(pending, k)
					continue
				}
				if o, err := s.Complete(t.Context(), cl, e, eventagg.AppendOptions{}); err != nil || o.Status != eventagg.Stored {
					t.Errorf("Complete(%+v) = %+v, %v; want Stored", cl, o, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for k := range keys {
		key := eventagg.Key{Topic: "hooks", EventID: fmt.Sprint(k)}
		if work[key] != 1 {
			t.Errorf("the work of %v was done %d times, want once", key, work[key])
		}
	}
	st, err := replicas[0].Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (eventagg.Counts{Received: keys, UniqueProcessed: keys, Stored: keys}); st.Counts != want {
		t.Errorf("Stats().Counts = %+v, want %+v", st.Counts, want)
	}
	if cc := claimCounts(t, replicas[1], time.Now()); cc != (eventagg.ClaimCounts{}) {
		t.Errorf("ClaimCounts = %+v, want none", cc)
	}
}

// TestCompleteWakesOtherReplica: a Complete notifies the followers of
// every replica, as an Append does.
func TestCompleteWakesOtherReplica(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	a, b := MustOpen(t, dsn, schema), MustOpen(t, dsn, schema)
	w := startWatch(t, b)
	e := event("hooks", "1")
	cl := claim(t, a, e.Key(), time.Minute, claimAt, eventagg.Claimed)
	if _, err := a.Complete(t.Context(), cl, e, eventagg.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	w.await(t, 2)
}

// TestCompleteRejectingConflictKeepsClaim: with RejectConflicts, a
// Complete whose event conflicts with a copy published meanwhile stores
// and counts nothing, and leaves the claim held: it can be released.
func TestCompleteRejectingConflictKeepsClaim(t *testing.T) {
	dsn := testDSN(t)
	s := MustOpen(t, dsn, newSchema(t, dsn))
	e := event("hooks", "1")
	cl := claim(t, s, e.Key(), time.Minute, claimAt, eventagg.Claimed)
	appendStatuses(t, s, withPayload(e, `{"other":true}`))
	_, err := s.Complete(t.Context(), cl, e, eventagg.AppendOptions{RejectConflicts: true})
	var ce *eventagg.ConflictError
	if !errors.As(err, &ce) || ce.Index != 0 || ce.Key != e.Key() {
		t.Fatalf("Complete(conflicting, rejecting) error = %v, want a ConflictError for its event", err)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (eventagg.Counts{Received: 1, UniqueProcessed: 1, Stored: 1}); st.Counts != want {
		t.Errorf("Stats().Counts = %+v, want %+v: the rejected Complete counted", st.Counts, want)
	}
	if cc := claimCounts(t, s, claimAt); cc != (eventagg.ClaimCounts{Active: 1}) {
		t.Errorf("ClaimCounts = %+v, want the claim still held", cc)
	}
	if err := s.Release(t.Context(), cl); err != nil {
		t.Errorf("Release after a rejected Complete: %v", err)
	}
	// The key is stored, by the published copy.
	claim(t, s, e.Key(), time.Minute, claimAt, eventagg.Done)
}

// TestClaimsClosed: every claim method returns ErrClosed after Close, and
// ctx's error once ctx ended.
func TestClaimsClosed(t *testing.T) {
	dsn := testDSN(t)
	s := MustOpen(t, dsn, newSchema(t, dsn))
	key := eventagg.Key{Topic: "hooks", EventID: "1"}
	cl := claim(t, s, key, time.Minute, claimAt, eventagg.Claimed)
	ended, cancel := context.WithCancel(t.Context())
	cancel()
	calls := func(ctx context.Context) map[string]error {
		_, claimErr := s.Claim(ctx, key, time.Minute, claimAt)
		_, completeErr := s.Complete(ctx, cl, event("hooks", "1"), eventagg.AppendOptions{})
		_, countsErr := s.ClaimCounts(ctx, claimAt)
		return map[string]error{"Claim": claimErr, "Complete": completeErr, "Release": s.Release(ctx, cl), "ClaimCounts": countsErr}
	}
	for name, err := range calls(ended) {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with an ended context: %v, want context.Canceled", name, err)
		}
	}
	s.Close()
	for name, err := range calls(t.Context()) {
		if !errors.Is(err, eventagg.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}
