package postgres_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/postgres"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

// TestExpiryUnderConcurrentReplicas runs, on two Stores over one schema (two
// replicas), writers that append keys from a small set, so that copies
// are duplicates, conflicts, or new again once their key left, while each
// replica expires in small chunks, with and without a dedup window.
// Meanwhile one query at a time checks that the counters of each topic
// equal the events a listing returns, in the same snapshot, and a reader
// pages through the events. At the end the counters equal what Append and
// Expire reported, and what left is a prefix of what was stored.
func TestExpiryUnderConcurrentReplicas(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	stores := []*postgres.Store{MustOpen(t, dsn, schema), MustOpen(t, dsn, schema)}
	const (
		writers = 4 // over the two stores
		appends = 60
		maxSize = 20
		keys    = 150
		window  = 40 * time.Millisecond // of the events
		dedup   = 80 * time.Millisecond // of the keys, every other chunk
	)
	// The clock of acceptance times: each Append moves it on by 1ms.
	var clock atomic.Int64
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return start.Add(time.Duration(clock.Load())) }

	type stored struct {
		key eventagg.Key
		seq int64
	}
	var (
		mu       sync.Mutex
		reported []stored // every event reported stored
		received int64
		expired  atomic.Int64 // events Expire reported removed
		writing  sync.WaitGroup
		others   sync.WaitGroup
		done     = make(chan struct{}) // closed once the writers are done
	)
	for w := range writers {
		writing.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			for i := range appends {
				batch := make([]eventagg.Event, 1+rng.IntN(maxSize))
				for j := range batch {
					batch[j] = payloadEvent([]string{"x", "y"}[rng.IntN(2)], strconv.Itoa(rng.IntN(keys)),
						fmt.Sprintf("w%d-%d-%d", w, i, j), rng.IntN(2))
				}
				at := start.Add(time.Duration(clock.Add(int64(time.Millisecond))))
				outcomes, err := stores[w%2].Append(t.Context(), batch, eventagg.AppendOptions{AcceptedAt: at})
				if err != nil {
					t.Errorf("writer %d: Append error: %v", w, err)
					return
				}
				mu.Lock()
				received += int64(len(batch))
				for j, o := range outcomes {
					if o.Status == eventagg.Stored {
						reported = append(reported, stored{batch[j].Key(), o.Seq})
					}
				}
				mu.Unlock()
			}
		})
	}
	for r, s := range stores {
		others.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 12))
			for i := 0; !isClosed(done); i++ {
				n := now()
				q := eventagg.ExpireQuery{PayloadsBefore: n.Add(-window), Limit: 1 + rng.IntN(30)}
				if i%2 == 0 {
					q.KeysBefore = n.Add(-dedup)
				}
				res, err := s.Expire(t.Context(), q)
				if err != nil {
					t.Errorf("replica %d: Expire(%+v) error: %v", r, q, err)
					return
				}
				if res.Events > q.Limit || res.Keys > q.Limit {
					t.Errorf("replica %d: Expire(%+v) = %+v, over the limit", r, q, res)
				}
				expired.Add(int64(res.Events))
			}
		})
	}
	// The counters of each topic against the events listed and those being
	// numbered (a provisional, negative Seq), in one snapshot.
	others.Go(func() {
		ctx := t.Context()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background())
		q := pgx.Identifier{schema}.Sanitize()
		sql := `SELECT c.topic, c.received, c.unique_processed, c.duplicate_dropped, c.stored, c.expired, coalesce(l.n, 0)
		FROM (SELECT topic, sum(received)::int8 AS received, sum(unique_processed)::int8 AS unique_processed,
			sum(duplicate_dropped)::int8 AS duplicate_dropped, sum(unique_processed - expired)::int8 AS stored,
			sum(expired)::int8 AS expired FROM ` + q + `.counters GROUP BY topic) c
		LEFT JOIN (SELECT topic, count(*) AS n FROM ` + q + `.events
			WHERE seq > (SELECT payloads FROM ` + q + `.retention) OR seq < 0 GROUP BY topic) l USING (topic)`
		for checks := 0; !isClosed(done) || checks == 0; checks++ {
			rows, err := conn.Query(ctx, sql)
			if err != nil {
				t.Error(err)
				return
			}
			for rows.Next() {
				var (
					topic                       string
					rcv, uniq, dup, st, x, list int64
				)
				if err := rows.Scan(&topic, &rcv, &uniq, &dup, &st, &x, &list); err != nil {
					t.Error(err)
					return
				}
				if rcv != uniq+dup || st < 0 || x < 0 || st != list {
					t.Errorf("topic %q in one snapshot: received %d, unique %d, duplicates %d, stored %d, expired %d, listed %d",
						topic, rcv, uniq, dup, st, x, list)
				}
			}
			if err := rows.Err(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	// A reader paging through the events sees each once, in Seq order.
	others.Go(func() {
		var last int64
		seen := make(map[int64]bool)
		for {
			finished := isClosed(done)
			n := 0
			for e, err := range stores[1].Events(t.Context(), eventagg.Query{After: last, Limit: 25}) {
				if err != nil {
					t.Errorf("reader: Events error: %v", err)
					return
				}
				if e.Seq <= last || seen[e.Seq] {
					t.Errorf("reader: Seq %d listed after %d", e.Seq, last)
				}
				seen[e.Seq] = true
				last = e.Seq
				n++
			}
			if finished && n == 0 {
				return
			}
		}
	})
	writing.Wait()
	close(done)
	others.Wait()
	if t.Failed() {
		return
	}

	// What is listed is the last copy stored of its key, and what is not
	// listed left: before every event listed.
	last := make(map[eventagg.Key]int64) // the Seq of the last copy stored of each key
	for _, r := range reported {
		if r.seq <= last[r.key] {
			t.Errorf("key %v stored with Seq %d after %d", r.key, r.seq, last[r.key])
		}
		last[r.key] = r.seq
	}
	listed := listAll(t, stores[0], eventagg.Query{})
	if diff := cmp.Diff(listed, listAll(t, stores[1], eventagg.Query{})); diff != "" {
		t.Errorf("the replicas list different events (-replica 1 +replica 2):\n%s", diff)
	}
	first := int64(math.MaxInt64)
	isListed := make(map[int64]bool)
	for _, e := range listed {
		if e.Seq != last[e.Key()] {
			t.Errorf("key %v listed with Seq %d, but its last copy stored has %d", e.Key(), e.Seq, last[e.Key()])
		}
		first = min(first, e.Seq)
		isListed[e.Seq] = true
	}
	for _, r := range reported {
		if !isListed[r.seq] && r.seq > first {
			t.Errorf("Seq %d (key %v) left, but Seq %d, before it, is still listed", r.seq, r.key, first)
		}
	}
	n := int64(len(reported))
	checkCounts := func(when string, listed int64) {
		t.Helper()
		st, err := stores[1].Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		want := eventagg.Counts{Received: received, UniqueProcessed: n, DuplicateDropped: received - n,
			Conflicts: st.Conflicts, Stored: listed, Expired: expired.Load()}
		if diff := cmp.Diff(want, st.Counts); diff != "" {
			t.Errorf("Stats() %s (-want +got):\n%s", when, diff)
		}
		if n != listed+expired.Load() {
			t.Errorf("%s: %d events stored, %d listed, %d reported removed by Expire", when, n, listed, expired.Load())
		}
	}
	checkCounts("after the load", int64(len(listed)))
	t.Logf("%d events received, %d stored (%d keys stored again after they left), %d left, %d listed",
		received, n, n-int64(len(last)), expired.Load(), len(listed))

	// The rest leaves, keys too: a copy of any key is new.
	for more := true; more; {
		res, err := stores[0].Expire(t.Context(), eventagg.ExpireQuery{PayloadsBefore: now().Add(time.Hour), Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		expired.Add(int64(res.Events))
		more = res.More
	}
	if got := listAll(t, stores[1], eventagg.Query{}); len(got) != 0 {
		t.Errorf("%d events listed after every one left", len(got))
	}
	checkCounts("once every event left", 0)
	again := payloadEvent("x", "0", "again", 0)
	if diff := cmp.Diff([]eventagg.Status{S}, appendStatuses(t, stores[1], again)); diff != "" {
		t.Errorf("a copy once every key left (-want +got):\n%s", diff)
	}
}
