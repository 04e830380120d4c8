package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/driver"
	"github.com/eventagg/eventagg/postgres"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"
)

// TestListingUnderConcurrentWriters checks the listing guarantee: while
// writers on four Stores (four pools, as four replicas) append concurrently,
// with random pauses between their appends and commits delayed by 0 to 7
// ms depending on the replica, and another session holds a
// write transaction open for two seconds, readers paging with Query.After
// see every stored event exactly once and in increasing Seq order. The
// Appends draw their Seqs as they go and commit out of order: a listing
// that showed events above the watermark (see watermark.go) would show a
// higher Seq before a lower one commits, and a reader whose cursor passed
// it would skip the lower one for ever. The held transaction is not an
// Append: it holds no listing back. The writers share keys, so that their
// Appends race on them (the slow path).
func TestListingUnderConcurrentWriters(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	// Each replica's commits wait a different time before their WAL is
	// flushed (commit_delay, with commit_siblings 0 so that every commit
	// waits; setting it takes a superuser, as the tests' role is), so that
	// transactions begun in one order commit in another.
	var stores []eventagg.Store
	for _, delay := range []string{"0", "1000", "3000", "7000"} {
		stores = append(stores, MustOpen(t, withSettings(dsn, "commit_delay", delay, "commit_siblings", "0"), schema))
	}
	const (
		writers = 8 // per store: 2
		appends = 40
		maxSize = 20
	)
	var (
		mu      sync.Mutex
		stored  = make(map[eventagg.Key]bool) // keys Append reported stored
		writing sync.WaitGroup
		done    = make(chan struct{}) // closed when every writer has returned
	)
	for w := range writers {
		writing.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 2))
			for i := range appends {
				batch := make([]eventagg.Event, 1+rng.IntN(maxSize))
				for j := range batch {
					// Mostly this writer's own new keys; some keys of the
					// other writers, some of its own again.
					id := fmt.Sprintf("w%d-%d-%d", w, i, j)
					if rng.IntN(5) == 0 {
						id = fmt.Sprintf("w%d-%d-%d", rng.IntN(writers), rng.IntN(i+1), rng.IntN(maxSize))
					}
					batch[j] = event([]string{"a", "b"}[rng.IntN(2)], id)
				}
				if rng.IntN(4) == 0 { // writers out of step with each other
					time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
				}
				outcomes, err := stores[w%len(stores)].Append(t.Context(), batch, eventagg.AppendOptions{})
				if err != nil {
					t.Errorf("writer %d: Append error: %v", w, err)
					return
				}
				mu.Lock()
				for j, e := range batch {
					if outcomes[j].Status == eventagg.Stored {
						if stored[e.Key()] {
							t.Errorf("key %v reported stored twice", e.Key())
						}
						stored[e.Key()] = true
					}
				}
				mu.Unlock()
			}
		})
	}

	// A long transaction elsewhere (one that has written, so it holds a
	// transaction id): listings must go on, and not skip, while it is open.
	held, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close(context.Background())
	tx, err := held.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `CREATE TEMPORARY TABLE held (x int); INSERT INTO held VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{}) // the held transaction ended: its connection may close
	go func() {
		defer close(released)
		select {
		case <-time.After(2 * time.Second):
		case <-done:
		}
		tx.Rollback(context.Background())
	}()

	type reader struct {
		topic string
		limit int
		seen  map[eventagg.Key]bool
		pages int
	}
	readers := []*reader{{limit: 7}, {limit: 0}, {topic: "a", limit: 13}}
	var reading sync.WaitGroup
	for r, rd := range readers {
		rd.seen = make(map[eventagg.Key]bool)
		reading.Go(func() {
			var last int64
			for {
				finished := isClosed(done) // read before the page: a page after it sees everything
				n := 0
				q := eventagg.Query{Topic: rd.topic, After: last, Limit: rd.limit}
				for e, err := range stores[r%len(stores)].Events(t.Context(), q) {
					if err != nil {
						t.Errorf("reader %d: Events(%+v) error: %v", r, q, err)
						return
					}
					if e.Seq <= last {
						t.Errorf("reader %d: Seq %d listed after %d", r, e.Seq, last)
					}
					if rd.seen[e.Key()] {
						t.Errorf("reader %d: key %v listed twice", r, e.Key())
					}
					if rd.topic != "" && e.Topic != rd.topic {
						t.Errorf("reader %d: event of topic %q in a listing of %q", r, e.Topic, rd.topic)
					}
					rd.seen[e.Key()] = true
					last = e.Seq
					n++
				}
				rd.pages++
				if finished && n == 0 {
					return
				}
			}
		})
	}
	writing.Wait()
	close(done)
	reading.Wait()
	<-released
	if t.Failed() {
		return
	}

	for r, rd := range readers {
		want := make(map[eventagg.Key]bool)
		for k := range stored {
			if rd.topic == "" || k.Topic == rd.topic {
				want[k] = true
			}
		}
		if diff := cmp.Diff(want, rd.seen); diff != "" {
			t.Errorf("reader %d (topic %q, limit %d) listed a different set of events (-want +got):\n%s",
				r, rd.topic, rd.limit, diff)
		}
		t.Logf("reader %d: %d events in %d listings", r, len(rd.seen), rd.pages)
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// publication is a Publish call that returned nil, with what it was told.
type publication struct {
	events []eventagg.Event
	res    eventagg.Result
}

// expectation is what the acknowledged publications imply about the store.
type expectation struct {
	topics map[string]eventagg.Counts
	first  map[eventagg.Key]eventagg.Event // the copy reported stored, per key
}

// expect tallies acknowledged publications, and checks that each key offered
// was reported stored by exactly one of them, and every other copy a
// duplicate or a conflict as its payload is or is not the stored copy's.
func expect(t *testing.T, pubs []publication) expectation {
	t.Helper()
	x := expectation{topics: make(map[string]eventagg.Counts), first: make(map[eventagg.Key]eventagg.Event)}
	for _, p := range pubs {
		for i, e := range p.events {
			if p.res.Outcomes[i].Status != eventagg.Stored {
				continue
			}
			if _, dup := x.first[e.Key()]; dup {
				t.Errorf("key %v reported stored twice", e.Key())
			}
			x.first[e.Key()] = e
		}
	}
	for _, p := range pubs {
		for i, e := range p.events {
			got := p.res.Outcomes[i].Status
			c := x.topics[e.Topic]
			c.Count(got)
			x.topics[e.Topic] = c
			first, ok := x.first[e.Key()]
			switch {
			case !ok:
				t.Errorf("key %v was acknowledged but never reported stored", e.Key())
			case got == eventagg.Stored:
			case got != eventagg.Duplicate && got != eventagg.Conflict:
				t.Errorf("key %v: outcome %v", e.Key(), got)
			case (got == eventagg.Conflict) == bytes.Equal(e.Payload, first.Payload):
				t.Errorf("key %v: a copy with payload %s of the one stored with %s is a %v", e.Key(), e.Payload, first.Payload, got)
			}
		}
	}
	return x
}

// lister is what Store and Aggregator have in common.
type lister interface {
	Events(ctx context.Context, q eventagg.Query) iter.Seq2[eventagg.Event, error]
	Stats(ctx context.Context) (eventagg.Stats, error)
}

// check compares what s holds with x: each key stored once, as the copy that
// was reported stored, and counters equal to the tallies.
func (x expectation) check(t *testing.T, name string, s lister) {
	t.Helper()
	got := make(map[eventagg.Key]eventagg.Event)
	for e, err := range s.Events(t.Context(), eventagg.Query{}) {
		if err != nil {
			t.Fatalf("%s: Events() error: %v", name, err)
		}
		if _, dup := got[e.Key()]; dup {
			t.Errorf("%s: key %v listed twice", name, e.Key())
		}
		got[e.Key()] = e
	}
	for k, want := range x.first {
		e, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s: key %v was acknowledged but is not stored", name, k)
		case e.Source != want.Source || string(e.Payload) != string(want.Payload) || !e.Timestamp.Equal(want.Timestamp):
			e.Seq = 0
			t.Errorf("%s: key %v is not stored as the copy reported stored (-want +got):\n%s", name, k, cmp.Diff(want, e))
		}
		delete(got, k)
	}
	for k := range got {
		t.Errorf("%s: key %v is stored but no acknowledged Publish reported it stored", name, k)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatalf("%s: Stats() error: %v", name, err)
	}
	var total eventagg.Counts
	for _, c := range x.topics {
		total.Add(c)
	}
	if diff := cmp.Diff(total, st.Counts); diff != "" {
		t.Errorf("%s: Stats() totals mismatch (-want +got):\n%s", name, diff)
	}
	if diff := cmp.Diff(x.topics, st.Topics); diff != "" {
		t.Errorf("%s: Stats().Topics mismatch (-want +got):\n%s", name, diff)
	}
}

// payloadEvent returns an event whose source names who published it, so
// that the stored copy tells which publication won, with one of a few
// payloads: a resend is a duplicate or a conflict as the payloads differ.
func payloadEvent(topic, id, by string, variant int) eventagg.Event {
	e := event(topic, id)
	e.Source = by
	e.Payload = json.RawMessage(`{"v":` + strconv.Itoa(variant) + `}`)
	return e
}

// TestReplicasAgree runs two Aggregators on two Stores over one schema, as
// two replicas behind a load balancer, with producers that resend the same
// keys to either. Each key is stored once, as the copy one Publish reported
// stored, and both replicas report the same counters.
func TestReplicasAgree(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	s1, s2 := MustOpen(t, dsn, schema), MustOpen(t, dsn, schema)
	aggs := []*eventagg.Aggregator{mustNew(t, s1), mustNew(t, s2)}
	const (
		producers = 16
		batches   = 25
		maxSize   = 30
		keys      = 400
	)
	var (
		mu   sync.Mutex
		pubs []publication
		wg   sync.WaitGroup
	)
	for p := range producers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p), 3))
			for i := range batches {
				batch := make([]eventagg.Event, 1+rng.IntN(maxSize))
				for j := range batch {
					by := fmt.Sprintf("p%d-%d-%d", p, i, j)
					batch[j] = payloadEvent([]string{"x", "y", "z"}[rng.IntN(3)], strconv.Itoa(rng.IntN(keys)), by, rng.IntN(2))
				}
				res, err := aggs[(p+i)%2].Publish(t.Context(), batch...)
				if err != nil {
					t.Errorf("producer %d: Publish error: %v", p, err)
					return
				}
				mu.Lock()
				pubs = append(pubs, publication{batch, res})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	x := expect(t, pubs)
	for i, a := range aggs {
		x.check(t, fmt.Sprintf("replica %d", i+1), a)
	}
	st1, err1 := aggs[0].Stats(t.Context())
	st2, err2 := aggs[1].Stats(t.Context())
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st1, st2, cmpopts.IgnoreFields(eventagg.Stats{}, "StartedAt")); diff != "" {
		t.Errorf("replicas disagree on Stats() (-replica1 +replica2):\n%s", diff)
	}
}

// TestReplicaClosedMidLoad closes one replica while producers publish to
// both; producers told ErrClosed resend to the other, as they would through a
// load balancer. Nothing either replica acknowledged is lost.
func TestReplicaClosedMidLoad(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	s1, s2 := MustOpen(t, dsn, schema), MustOpen(t, dsn, schema)
	aggs := []*eventagg.Aggregator{mustNew(t, s1), mustNew(t, s2)}
	const (
		producers = 12
		batches   = 30
		maxSize   = 20
		keys      = 300
	)
	var (
		mu        sync.Mutex
		pubs      []publication
		acked     atomic.Int64
		closeNow  = make(chan struct{})
		closeOnce sync.Once
		resent    atomic.Int64
		wg        sync.WaitGroup
	)
	for p := range producers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p), 4))
			for i := range batches {
				batch := make([]eventagg.Event, 1+rng.IntN(maxSize))
				for j := range batch {
					by := fmt.Sprintf("p%d-%d-%d", p, i, j)
					batch[j] = payloadEvent([]string{"x", "y"}[rng.IntN(2)], strconv.Itoa(rng.IntN(keys)), by, rng.IntN(2))
				}
				target := (p + i) % 2
				res, err := aggs[target].Publish(t.Context(), batch...)
				if errors.Is(err, eventagg.ErrClosed) && target == 0 {
					resent.Add(1)
					res, err = aggs[1].Publish(t.Context(), batch...)
				}
				if err != nil {
					t.Errorf("producer %d: Publish error: %v", p, err)
					return
				}
				mu.Lock()
				pubs = append(pubs, publication{batch, res})
				mu.Unlock()
				if acked.Add(1) == producers*batches/3 {
					closeOnce.Do(func() { close(closeNow) })
				}
			}
		})
	}
	<-closeNow
	// Close the first replica as its process would on SIGTERM: drain the
	// aggregator, then close the store.
	if err := aggs[0].Close(); err != nil {
		t.Errorf("Aggregator.Close() error: %v", err)
	}
	if err := s1.Close(); err != nil {
		t.Errorf("Store.Close() error: %v", err)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if _, err := aggs[0].Publish(t.Context(), event("x", "late")); !errors.Is(err, eventagg.ErrClosed) {
		t.Errorf("Publish on the closed replica = %v, want ErrClosed", err)
	}
	t.Logf("%d publications acknowledged, %d resent to the second replica", len(pubs), resent.Load())
	if resent.Load() == 0 {
		t.Log("no publication was resent: the close came after every producer had moved on")
	}
	x := expect(t, pubs)
	x.check(t, "surviving replica", aggs[1])
	// A replica started afresh over the same schema sees the same.
	x.check(t, "restarted replica", mustNew(t, MustOpen(t, dsn, schema)))
}

func mustNew(tb testing.TB, s eventagg.Store) *eventagg.Aggregator {
	tb.Helper()
	a, err := eventagg.New(s, nil)
	if err != nil {
		tb.Fatalf("New() error: %v", err)
	}
	tb.Cleanup(func() { a.Close() })
	return a
}

// TestAppendsOverlap checks that Appends from two stores run at once:
// while replica A's Append is held inside its transaction (waiting for its
// counter row, which the test holds locked, as a slow disk or a busy row
// would make it wait), replica B's Append of another topic stores and
// counts its event, committed, before A's ends. Under a lock held across
// every Append (schema version 4), B would wait for A from the start. Once
// A goes on, both are listed exactly once, in Seq order, A's first: A drew
// its Seq before it waited.
func TestAppendsOverlap(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	q := pgx.Identifier{schema}.Sanitize()
	a, b := openOneShard(t, dsn, schema), openOneShard(t, dsn, schema)
	appendStatuses(t, a, event("a", "0")) // makes topic a's counter row

	blocker := lockCounters(t, dsn, q, "a")
	var results [2]chan appendResult
	results[0] = appendAsync(t, a, event("a", "1"))
	awaitWaiting(t, dsn, "%"+q+"%")
	results[1] = appendAsync(t, b, event("b", "1"))
	// B's transaction commits while A's is still open.
	awaitCount(t, dsn, `SELECT coalesce(sum(received), 0)::int8 FROM `+q+`.counters WHERE topic = 'b'`, 1,
		"B's Append committed while A's was held (Appends overlap)")
	select {
	case r := <-results[0]:
		t.Fatalf("A's Append returned (%+v, %v) while its counter row was locked", r.outcomes, r.err)
	default:
	}
	blocker.Rollback(context.Background())

	var seqs [2]int64
	for i := range results {
		r := <-results[i]
		if r.err != nil {
			t.Fatalf("Append %d error: %v", i, r.err)
		}
		if r.outcomes[0].Status != eventagg.Stored || r.outcomes[0].Seq <= 0 {
			t.Fatalf("Append %d = %+v, want stored with a Seq", i, r.outcomes)
		}
		seqs[i] = r.outcomes[0].Seq
	}
	if seqs[0] >= seqs[1] {
		t.Errorf("A's event has Seq %d, B's %d: A's should have been drawn first", seqs[0], seqs[1])
	}
	var got []string
	for _, e := range listAll(t, b, eventagg.Query{After: 0}) {
		got = append(got, fmt.Sprintf("%s/%s@%d", e.Topic, e.EventID, e.Seq))
	}
	first := listAll(t, a, eventagg.Query{})[0].Seq
	want := []string{fmt.Sprintf("a/0@%d", first), fmt.Sprintf("a/1@%d", seqs[0]), fmt.Sprintf("b/1@%d", seqs[1])}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Events() (-want +got):\n%s", diff)
	}
}

// TestAppendRacesAnotherOfTheSameKey stores key k from replica B, held
// inside its transaction, while replica A appends k with another payload:
// A's insert waits for B's transaction, whose key A's snapshot did not
// hold. Once B commits, A's copy is judged against B's, a conflict, and
// counted once: the Append that raced is retried on the path that judges
// such keys (two snapshots), not stored twice or counted as new.
func TestAppendRacesAnotherOfTheSameKey(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	q := pgx.Identifier{schema}.Sanitize()
	a, b := openOneShard(t, dsn, schema), openOneShard(t, dsn, schema)
	appendStatuses(t, a, event("t", "0")) // makes the topic's counter row

	blocker := lockCounters(t, dsn, q, "t")
	k := event("t", "k")
	fromB := appendAsync(t, b, k)
	awaitWaiting(t, dsn, "%"+q+"%") // B holds k, waiting for its counter row
	fromA := appendAsync(t, a, withPayload(k, `{"other":true}`))
	// A waits for B's transaction, in the unique index of the keys.
	awaitCount(t, dsn, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'transactionid'`, 1,
		"A's Append waits for B's transaction")
	blocker.Rollback(context.Background())
	rb, ra := <-fromB, <-fromA
	if rb.err != nil || ra.err != nil {
		t.Fatalf("Append errors: B %v, A %v", rb.err, ra.err)
	}
	if diff := cmp.Diff([]eventagg.Status{S}, statuses(rb.outcomes)); diff != "" {
		t.Errorf("B's Append (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]eventagg.Status{C}, statuses(ra.outcomes)); diff != "" {
		t.Errorf("A's Append (-want +got):\n%s", diff)
	}
	st, err := a.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (eventagg.Counts{Received: 3, UniqueProcessed: 2, DuplicateDropped: 1, Conflicts: 1, Stored: 2}); st.Counts != want {
		t.Errorf("Stats().Counts = %+v, want %+v", st.Counts, want)
	}
	got := listAll(t, a, eventagg.Query{Topic: "t"})
	if len(got) != 2 || got[1].Key() != k.Key() || string(got[1].Payload) != string(k.Payload) {
		t.Errorf("Events() = %+v, want t/0 and B's copy of k", got)
	}
}

// awaitCount waits until the count that sql queries reaches want, and
// fails t, naming what it waited for, if that takes over awaitTimeout.
func awaitCount(t *testing.T, dsn, sql string, want int64, what string) {
	t.Helper()
	deadline := time.Now().Add(awaitTimeout)
	for {
		var got int64
		query(t, dsn, sql, &got)
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not so after %v: %s (count %d, want %d)", awaitTimeout, what, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openOneShard opens a Store on schema with one counter shard per topic,
// so that a test that locks a topic's counter row holds every Append of
// the topic, and closes it when the test ends.
func openOneShard(t *testing.T, dsn, schema string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), dsn, &postgres.Options{Schema: schema, CounterShards: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// appendResult is what an Append returned.
type appendResult struct {
	outcomes []eventagg.Outcome
	err      error
}

// appendAsync appends e to s in a goroutine of its own, and sends what
// the Append returned on the channel it returns.
func appendAsync(t *testing.T, s eventagg.Store, e eventagg.Event) chan appendResult {
	c := make(chan appendResult, 1)
	go func() {
		o, err := s.Append(t.Context(), []eventagg.Event{e}, eventagg.AppendOptions{})
		c <- appendResult{o, err}
	}()
	return c
}

// lockCounters locks the counter rows of topic in schema q (quoted) in a
// transaction of its own, which the caller rolls back to release them.
func lockCounters(t *testing.T, dsn, q, topic string) pgx.Tx {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(context.Background()) })
	if _, err := tx.Exec(t.Context(), `SELECT FROM `+q+`.counters WHERE topic = $1 FOR UPDATE`, topic); err != nil {
		t.Fatal(err)
	}
	return tx
}

// TestEventsLeftWithoutANumberAreNumbered checks what a replica of the
// version before does to a schema this one opens: it stored events with a
// provisional, negative Seq and numbered them in a second transaction,
// which may have failed. Open numbers them, after the events already
// numbered and in the order of their provisional numbers; until then they
// are not listed, and a resend of their key is a duplicate.
func TestEventsLeftWithoutANumberAreNumbered(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	q := pgx.Identifier{schema}.Sanitize()
	s := MustOpen(t, dsn, schema)
	appendStatuses(t, s, event("t", "0"))
	leave := func(id string) { leaveProvisional(t, dsn, q, id) }
	ids := func(s eventagg.Store) []string {
		var out []string
		for _, e := range listAll(t, s, eventagg.Query{}) {
			out = append(out, e.EventID)
		}
		return out
	}
	leave("first")
	leave("second")
	if diff := cmp.Diff([]string{"0"}, ids(s)); diff != "" {
		t.Errorf("Events() before (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]eventagg.Status{D}, appendStatuses(t, s, event("t", "first"))); diff != "" {
		t.Errorf("resend (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"0", "first", "second"}, ids(MustOpen(t, dsn, schema))); diff != "" {
		t.Errorf("Events() after Open (-want +got):\n%s", diff)
	}
	appendStatuses(t, s, event("t", "1"))
	if diff := cmp.Diff([]string{"0", "first", "second", "1"}, ids(s)); diff != "" {
		t.Errorf("Events() after a new event (-want +got):\n%s", diff)
	}
}

// TestMigrateFromVersion5 opens a schema of version 5 holding an event
// that a replica of that version left with a provisional Seq: Open
// upgrades it to the current version, numbers the event after the others,
// and the Ping of a replica that still expects version 5 would fail (the
// version moved).
func TestMigrateFromVersion5(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	q := pgx.Identifier{schema}.Sanitize()
	s := MustOpen(t, dsn, schema)
	appendStatuses(t, s, event("t", "0"))
	s.Close()
	exec(t, dsn, `UPDATE `+q+`.eventagg_schema SET version = 5`)
	exec(t, dsn, `COMMENT ON SEQUENCE `+q+`.events_pending IS NULL`)
	leaveProvisional(t, dsn, q, "left")

	s = MustOpen(t, dsn, schema)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping() after the upgrade: %v", err)
	}
	var version int
	var comment *string
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(t.Context(), `SELECT version, obj_description('`+q+`.events_pending'::regclass, 'pg_class') FROM `+q+`.eventagg_schema`).Scan(&version, &comment); err != nil {
		t.Fatal(err)
	}
	if version <= 5 || comment == nil {
		t.Errorf("after Open: version %d, events_pending's comment %v; want a version above 5 and the comment", version, comment)
	}
	got := listAll(t, s, eventagg.Query{})
	if diff := cmp.Diff([]string{"t/0", "t/left"}, keys(got)); diff != "" || got[1].Seq <= got[0].Seq {
		t.Errorf("Events() after the upgrade (-want +got):\n%s; Seqs %d, %d", diff, got[0].Seq, got[len(got)-1].Seq)
	}
}

// leaveProvisional stores event t/id in schema q (quoted) as a replica of
// schema version 5 left it when its numbering failed: with a provisional,
// negative Seq from events_pending.
func leaveProvisional(t *testing.T, dsn, q, id string) {
	t.Helper()
	p := []byte(`{"id":"` + id + `"}`)
	exec(t, dsn, `INSERT INTO `+q+`.events (seq, topic, event_id, ts, payload, phash, accepted)
		VALUES (-nextval('`+q+`.events_pending'), 't', $1, 0, $2, $3, 0)`, id, p, driver.PayloadHash(p))
}
