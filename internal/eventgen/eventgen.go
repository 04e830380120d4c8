// Package eventgen makes batches of events for benchmarks and load tests:
// new ids in order, sequential or random (UUID-like), with a chosen share of
// duplicates drawn from ids made before.
package eventgen

import (
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/eventagg/eventagg"
)

// Generator makes benchmark batches: new event ids in order, with a share of
// ids drawn again from those already made. It is not safe for concurrent use.
type Generator struct {
	// Topic is the topic of the events made; default "bench".
	Topic string

	rng     *rand.Rand
	seed    uint64
	prefix  string
	uuid    bool
	next    uint64
	payload json.RawMessage
	ts      time.Time
}

// Kinds are the id kinds New accepts.
var Kinds = []string{"seq", "uuid"}

// New returns a Generator whose choices follow seed, making ids of the given
// kind: "seq" for sequential ids ("evt-<seed>-<n>"), "uuid" for random
// UUID-like ids, which land all over a B-tree index as real-world ids do.
// Generators with different seeds make different ids. It panics on an
// unknown kind.
func New(seed uint64, kind string) *Generator {
	g := &Generator{
		Topic:   "bench",
		rng:     rand.New(rand.NewPCG(seed, seed)),
		seed:    seed,
		prefix:  "evt-" + strconv.FormatUint(seed, 10) + "-",
		payload: json.RawMessage(`{"user":"u-123","amount":4200,"currency":"EUR","tags":["a","b"]}`),
		ts:      time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC),
	}
	switch kind {
	case "seq":
	case "uuid":
		g.uuid = true
	default:
		panic("eventgen: unknown id kind " + strconv.Quote(kind))
	}
	return g
}

// Made returns how many distinct ids g has made.
func (g *Generator) Made() uint64 { return g.next }

// Skip makes g behave as if it had already made n more ids: later batches
// draw duplicates from them too. Use it to continue after a prefill made by
// another Generator with the same seed and kind.
func (g *Generator) Skip(n uint64) { g.next += n }

// ID returns the id of the n-th event g makes (from 0).
func (g *Generator) ID(n uint64) string {
	if !g.uuid {
		return g.prefix + strconv.FormatUint(n, 10)
	}
	// Two rounds of splitmix64 give 128 well-mixed bits, written as a
	// version-4 UUID.
	hi := splitmix64(splitmix64(g.seed) + n)
	lo := splitmix64(hi ^ n)
	hi = hi&^0xf000 | 0x4000
	lo = lo&^(0xc<<60) | 0x8<<60
	const hex = "0123456789abcdef"
	var b [36]byte
	for i, j := 0, 0; i < 36; i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			b[i] = '-'
			continue
		}
		var nib uint64
		if j < 16 {
			nib = hi >> (60 - 4*j) & 0xf
		} else {
			nib = lo >> (60 - 4*(j-16)) & 0xf
		}
		b[i] = hex[nib]
		j++
	}
	return string(b[:])
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// Batch returns size events on g.Topic, of which about dupRatio repeat
// ids made before (none in the very first batch).
func (g *Generator) Batch(size int, dupRatio float64) []eventagg.Event {
	batch := make([]eventagg.Event, size)
	for i := range batch {
		var n uint64
		if g.next > 0 && g.rng.Float64() < dupRatio {
			n = g.rng.Uint64N(g.next)
		} else {
			n = g.next
			g.next++
		}
		batch[i] = eventagg.Event{
			Topic:     g.Topic,
			EventID:   g.ID(n),
			Timestamp: g.ts.Add(time.Duration(n) * time.Millisecond),
			Source:    "bench",
			Payload:   g.payload,
		}
	}
	return batch
}
