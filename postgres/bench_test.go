package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/internal/eventgen"
	"github.com/eventagg/eventagg/storetest"
)

// BenchmarkAppend measures one Store appending alone, one batch at a time.
func BenchmarkAppend(b *testing.B) {
	dsn := testDSN(b)
	storetest.Bench(b, func(tb testing.TB) eventagg.Store { return MustOpen(tb, dsn, newSchema(tb, dsn)) })
}

// BenchmarkAppendTwoReplicas measures two Stores (two pools, as two replicas)
// appending to one schema at once, each from one goroutine as an
// Aggregator's writer does. It reports the events/s of both together.
func BenchmarkAppendTwoReplicas(b *testing.B) {
	dsn := testDSN(b)
	for _, size := range storetest.BatchSizes {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			schema := newSchema(b, dsn)
			stores := []eventagg.Store{MustOpen(b, dsn, schema), MustOpen(b, dsn, schema)}
			gens := []*eventgen.Generator{eventgen.New(1, "seq"), eventgen.New(2, "seq")}
			ctx := context.Background()
			var (
				events atomic.Int64
				wg     sync.WaitGroup
			)
			b.ResetTimer()
			for r := range stores {
				wg.Go(func() {
					for i := r; i < b.N; i += len(stores) {
						batch := gens[r].Batch(size, storetest.DuplicateRatio)
						if _, err := stores[r].Append(ctx, batch, eventagg.AppendOptions{}); err != nil {
							b.Errorf("replica %d: Append: %v", r, err)
							return
						}
						events.Add(int64(len(batch)))
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(events.Load())/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkPublishReplicas measures 1, 2 and 4 Aggregators (replicas), each
// on its own Store and pool over one schema, serving 32 producers spread
// evenly over them, each publishing batch events per call. Group commit
// merges each replica's calls into few transactions; the replicas' Appends
// run at once. Besides events/s it reports the highest numbers seen at once
// (sampled every 5 ms from pg_stat_activity) of the schema's statements
// running (max_active) and of those waiting on a lock (max_lockwait).
//
// The load runs in the benchmark's process, which leaves the CPUs to the
// database: scripts/pg-replicas.sh measures the same through server
// processes and HTTP.
func BenchmarkPublishReplicas(b *testing.B) {
	dsn := testDSN(b)
	const producers = 32
	for _, replicas := range []int{1, 2, 4} {
		for _, size := range []int{1, 100} {
			b.Run(fmt.Sprintf("replicas=%d/batch=%d", replicas, size), func(b *testing.B) {
				schema := newSchema(b, dsn)
				aggs := make([]*eventagg.Aggregator, replicas)
				for i := range aggs {
					aggs[i] = mustNew(b, MustOpen(b, dsn, schema))
				}
				sample := sampleActivity(b, dsn, schema)
				var (
					events atomic.Int64
					left   atomic.Int64
					wg     sync.WaitGroup
				)
				left.Store(int64(b.N))
				b.ResetTimer()
				for p := range producers {
					wg.Go(func() {
						gen := eventgen.New(uint64(p+1), "seq")
						agg := aggs[p%replicas]
						for left.Add(-1) >= 0 {
							batch := gen.Batch(size, storetest.DuplicateRatio)
							if _, err := agg.Publish(context.Background(), batch...); err != nil {
								b.Errorf("Publish: %v", err)
								return
							}
							events.Add(int64(len(batch)))
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				active, waiting := sample()
				b.ReportMetric(float64(events.Load())/b.Elapsed().Seconds(), "events/s")
				b.ReportMetric(float64(active), "max_active")
				b.ReportMetric(float64(waiting), "max_lockwait")
			})
		}
	}
}

// sampleActivity samples, every 5 ms until the function it returns is
// called, how many of the backends of pg_stat_activity run a statement on
// schema, and how many of them wait on a lock; that function returns the
// highest of each seen.
func sampleActivity(tb testing.TB, dsn, schema string) func() (active, waiting int) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	var maxActive, maxWaiting int
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer conn.Close(context.Background())
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var a, w int
			err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE wait_event_type = 'Lock')
				FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE '%' || $1 || '%'`, schema).Scan(&a, &w)
			if err != nil {
				return // cancelled
			}
			maxActive, maxWaiting = max(maxActive, a), max(maxWaiting, w)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() (int, int) {
		cancel()
		<-done
		return maxActive, maxWaiting
	}
}

// BenchmarkListPage measures one page of a listing (100 events, the
// cursor moving through 10,000 stored ones), as a follower or a client
// paging with after reads them: with no Append in flight, the cost of the
// watermark's sample and of the page's query.
func BenchmarkListPage(b *testing.B) {
	dsn := testDSN(b)
	s := MustOpen(b, dsn, newSchema(b, dsn))
	gen := eventgen.New(1, "seq")
	for range 10 {
		if _, err := s.Append(context.Background(), gen.Batch(1000, 0), eventagg.AppendOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	var after int64
	b.ResetTimer()
	for b.Loop() {
		n := 0
		for e, err := range s.Events(context.Background(), eventagg.Query{After: after, Limit: 100}) {
			if err != nil {
				b.Fatal(err)
			}
			after, n = e.Seq, n+1
		}
		if n < 100 {
			after = 0
		}
	}
}
