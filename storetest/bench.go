package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/internal/eventgen"
)

// BatchSizes are the batch sizes Bench measures.
var BatchSizes = []int{1, 100, 1000}

// DuplicateRatio is the share of each benchmark batch that repeats an event
// stored earlier.
const DuplicateRatio = 0.2

// Bench measures Append throughput of the stores open returns, one store per
// sub-benchmark, and reports events/s. Sub-benchmarks are named
// ids=<seq|uuid>/batch=<n>: sequential or random (UUID-like) event ids, for
// each of BatchSizes. Each batch holds DuplicateRatio resent events; the rest
// are new.
//
//	func BenchmarkAppend(b *testing.B) {
//		storetest.Bench(b, func(tb testing.TB) eventagg.Store { return mystore.Open(tb.TempDir()) })
//	}
func Bench(b *testing.B, open func(tb testing.TB) eventagg.Store) {
	for _, ids := range eventgen.Kinds {
		for _, size := range BatchSizes {
			b.Run(fmt.Sprintf("ids=%s/batch=%d", ids, size), func(b *testing.B) {
				s := open(b)
				b.Cleanup(func() { s.Close() })
				gen := eventgen.New(1, ids)
				ctx := context.Background()
				var events int
				for b.Loop() {
					batch := gen.Batch(size, DuplicateRatio)
					if _, err := s.Append(ctx, batch, eventagg.AppendOptions{}); err != nil {
						b.Fatalf("Append: %v", err)
					}
					events += len(batch)
				}
				b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}
