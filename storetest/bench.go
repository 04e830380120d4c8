package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
)

// BatchSizes are the batch sizes Bench measures.
var BatchSizes = []int{1, 100, 1000}

// DuplicateRatio is the share of each benchmark batch that repeats an event
// stored earlier.
const DuplicateRatio = 0.2

// Bench measures Append throughput of the stores open returns, one store per
// batch size, and reports events/s. Each batch holds DuplicateRatio resent
// events; the rest are new.
//
//	func BenchmarkAppend(b *testing.B) {
//		storetest.Bench(b, func(tb testing.TB) eventagg.Store { return mystore.Open(tb.TempDir()) })
//	}
func Bench(b *testing.B, open func(tb testing.TB) eventagg.Store) {
	for _, size := range BatchSizes {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := open(b)
			b.Cleanup(func() { s.Close() })
			gen := NewGenerator(1)
			ctx := context.Background()
			var events int
			for b.Loop() {
				batch := gen.Batch(size, DuplicateRatio)
				if _, err := s.Append(ctx, batch); err != nil {
					b.Fatalf("Append: %v", err)
				}
				events += len(batch)
			}
			b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// Generator makes benchmark batches: sequential new event ids, with a share
// of ids drawn again from those already made. It is not safe for concurrent use.
type Generator struct {
	rng     *rand.Rand
	prefix  string
	next    int
	payload json.RawMessage
	ts      time.Time
}

// NewGenerator returns a Generator whose choices follow seed. Generators with
// different seeds make different event ids.
func NewGenerator(seed uint64) *Generator {
	return &Generator{
		rng:     rand.New(rand.NewPCG(seed, seed)),
		prefix:  "evt-" + strconv.FormatUint(seed, 10) + "-",
		payload: json.RawMessage(`{"user":"u-123","amount":4200,"currency":"EUR","tags":["a","b"]}`),
		ts:      time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC),
	}
}

// Batch returns size events on topic "bench", of which about dupRatio repeat
// ids made before (none in the very first batch).
func (g *Generator) Batch(size int, dupRatio float64) []eventagg.Event {
	batch := make([]eventagg.Event, size)
	for i := range batch {
		var id int
		if g.next > 0 && g.rng.Float64() < dupRatio {
			id = g.rng.IntN(g.next)
		} else {
			id = g.next
			g.next++
		}
		batch[i] = eventagg.Event{
			Topic:     "bench",
			EventID:   g.prefix + strconv.Itoa(id),
			Timestamp: g.ts.Add(time.Duration(id) * time.Millisecond),
			Source:    "bench",
			Payload:   g.payload,
		}
	}
	return batch
}
