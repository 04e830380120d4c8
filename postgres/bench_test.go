package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

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

// BenchmarkPublishTwoReplicas measures two Aggregators, on two Stores over one
// schema, serving many concurrent producers: group commit merges their calls
// into few transactions.
func BenchmarkPublishTwoReplicas(b *testing.B) {
	dsn := testDSN(b)
	for _, size := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			schema := newSchema(b, dsn)
			aggs := []*eventagg.Aggregator{
				mustNew(b, MustOpen(b, dsn, schema)),
				mustNew(b, MustOpen(b, dsn, schema)),
			}
			var (
				events    atomic.Int64
				producers atomic.Uint64
			)
			b.SetParallelism(32) // 64 producers on 2 CPUs
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				p := producers.Add(1)
				gen := eventgen.New(p, "seq")
				agg := aggs[p%2]
				for pb.Next() {
					batch := gen.Batch(size, storetest.DuplicateRatio)
					if _, err := agg.Publish(context.Background(), batch...); err != nil {
						b.Errorf("Publish: %v", err)
						return
					}
					events.Add(int64(len(batch)))
				}
			})
			b.ReportMetric(float64(events.Load())/b.Elapsed().Seconds(), "events/s")
		})
	}
}
