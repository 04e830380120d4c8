package eventagg_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/storetest"
)

// BenchmarkPublish measures durable Publish throughput on SQLite (SyncFull)
// from one goroutine: each call waits for its own commit.
func BenchmarkPublish(b *testing.B) {
	for _, size := range storetest.BatchSizes {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			agg := MustNew(b, MustOpenSQLite(b, filepath.Join(b.TempDir(), "events.db"), nil), nil)
			gen := storetest.NewGenerator(1)
			ctx := context.Background()
			events := 0
			for b.Loop() {
				batch := gen.Batch(size, storetest.DuplicateRatio)
				if _, err := agg.Publish(ctx, batch...); err != nil {
					b.Fatal(err)
				}
				events += size
			}
			b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkPublishParallel measures Publish on SQLite (SyncFull) from 32
// goroutines per CPU at once: group commit merges their calls.
func BenchmarkPublishParallel(b *testing.B) {
	for _, size := range storetest.BatchSizes {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			agg := MustNew(b, MustOpenSQLite(b, filepath.Join(b.TempDir(), "events.db"), nil), nil)
			var seed, events atomic.Int64
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				gen := storetest.NewGenerator(uint64(seed.Add(1)))
				for pb.Next() {
					if _, err := agg.Publish(context.Background(), gen.Batch(size, storetest.DuplicateRatio)...); err != nil {
						b.Error(err)
						return
					}
					events.Add(int64(size))
				}
			})
			b.ReportMetric(float64(events.Load())/b.Elapsed().Seconds(), "events/s")
		})
	}
}

var _ eventagg.Store = (*eventagg.SQLiteStore)(nil)
