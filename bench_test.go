package eventagg_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/internal/eventgen"
	"github.com/eventagg/eventagg/storetest"
	"github.com/ncruces/go-sqlite3"
)

// Every benchmark here runs with sequential and random (UUID-like) ids, at
// batch sizes 1, 100 and 1000, with 20% duplicates, on SQLite with
// synchronous=FULL, and reports events/s. Compare them in one run:
//
//	go test -run '^$' -bench 'RawInsert|SQLiteStoreAppend|Publish' .

func forEachShape(b *testing.B, fn func(b *testing.B, ids string, size int)) {
	for _, ids := range eventgen.Kinds {
		for _, size := range storetest.BatchSizes {
			b.Run(fmt.Sprintf("ids=%s/batch=%d", ids, size), func(b *testing.B) { fn(b, ids, size) })
		}
	}
}

func reportRate(b *testing.B, events int64) {
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRawInsert is the baseline: a bare ncruces prepared-statement loop
// inserting into the store's own schema, one transaction per batch, with the
// store's pragmas (WAL, synchronous=FULL, SQLite's own checkpoints), and
// nothing else: no validation, no counters, no queue.
func BenchmarkRawInsert(b *testing.B) {
	forEachShape(b, func(b *testing.B, ids string, size int) {
		path := filepath.Join(b.TempDir(), "events.db")
		s, err := eventagg.OpenSQLite(path, nil) // creates the schema
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
		rawInsert(b, path, eventgen.New(1, ids), size)
	})
}

// rawInsert runs the baseline loop on the database at path, b.N batches of size.
func rawInsert(b *testing.B, path string, gen *eventgen.Generator, size int) {
	c, err := sqlite3.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Exec(`PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; INSERT INTO topics (name) VALUES ('bench') ON CONFLICT DO NOTHING`); err != nil {
		b.Fatal(err)
	}
	var topicID int64
	q, _, err := c.Prepare(`SELECT id FROM topics WHERE name = 'bench'`)
	if err != nil {
		b.Fatal(err)
	}
	if q.Step() {
		topicID = q.ColumnInt64(0)
	}
	q.Close()
	ins, _, err := c.Prepare(`INSERT INTO events (topic_id, event_id, ts, source, payload) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`)
	if err != nil {
		b.Fatal(err)
	}
	defer ins.Close()
	var events int64
	for b.Loop() {
		batch := gen.Batch(size, storetest.DuplicateRatio)
		if err := c.Exec(`BEGIN IMMEDIATE`); err != nil {
			b.Fatal(err)
		}
		for i := range batch {
			e := &batch[i]
			ins.BindInt64(1, topicID)
			ins.BindText(2, e.EventID)
			ins.BindInt64(3, e.Timestamp.UnixNano())
			ins.BindText(4, e.Source)
			ins.BindBlob(5, e.Payload)
			if err := ins.Exec(); err != nil {
				b.Fatal(err)
			}
		}
		if err := c.Exec(`COMMIT`); err != nil {
			b.Fatal(err)
		}
		events += int64(size)
	}
	reportRate(b, events)
}

// BenchmarkPublish measures durable Publish on SQLite from one goroutine:
// each call waits for its own commit.
func BenchmarkPublish(b *testing.B) {
	forEachShape(b, func(b *testing.B, ids string, size int) {
		agg := MustNew(b, MustOpenSQLite(b, filepath.Join(b.TempDir(), "events.db"), nil), nil)
		gen := eventgen.New(1, ids)
		ctx := context.Background()
		var events int64
		for b.Loop() {
			if _, err := agg.Publish(ctx, gen.Batch(size, storetest.DuplicateRatio)...); err != nil {
				b.Fatal(err)
			}
			events += int64(size)
		}
		reportRate(b, events)
	})
}

// BenchmarkPublishDuplicates measures the duplicate path alone: batches of
// 1000 resends of events stored before, each compared with the stored copy
// (none is a conflict). "recent": resends of the last 100,000 events this
// process stored, as at-least-once producers resend, which the store's
// cache of keys judges; "cold": resends of 400,000 events stored before the
// store was opened, most of which the cache never saw, so that each costs a
// lookup of the stored copy.
func BenchmarkPublishDuplicates(b *testing.B) {
	for _, ids := range eventgen.Kinds {
		for _, cold := range []bool{false, true} {
			name := "ids=" + ids + "/recent"
			if cold {
				name = "ids=" + ids + "/cold"
			}
			b.Run(name, func(b *testing.B) { benchDuplicates(b, ids, cold) })
		}
	}
}

func benchDuplicates(b *testing.B, ids string, cold bool) {
	path := filepath.Join(b.TempDir(), "events.db")
	gen := eventgen.New(1, ids)
	ctx := context.Background()
	prefill := 100
	if cold {
		prefill = 400
	}
	s := MustOpenSQLite(b, path, nil)
	agg := MustNew(b, s, nil)
	for range prefill {
		if _, err := agg.Publish(ctx, gen.Batch(1000, 0)...); err != nil {
			b.Fatal(err)
		}
	}
	if cold { // a new store: its cache knows no key
		agg.Close()
		s.Close()
		agg = MustNew(b, MustOpenSQLite(b, path, nil), nil)
	}
	var events int64
	for b.Loop() {
		res, err := agg.Publish(ctx, gen.Batch(1000, 1)...)
		if err != nil || res.Duplicates != 1000 {
			b.Fatalf("Publish of resends = %+v, %v", res.Duplicates, err)
		}
		events += 1000
	}
	reportRate(b, events)
}

// BenchmarkPublish32 measures Publish on SQLite from 32 goroutines at once:
// group commit merges their calls into shared transactions.
func BenchmarkPublish32(b *testing.B) {
	forEachShape(b, func(b *testing.B, ids string, size int) {
		agg := MustNew(b, MustOpenSQLite(b, filepath.Join(b.TempDir(), "events.db"), nil), nil)
		const publishers = 32
		// Each publisher makes its batches ahead; b.N is shared out between them.
		gens := make([]*eventgen.Generator, publishers)
		for i := range gens {
			gens[i] = eventgen.New(uint64(i+1), ids)
		}
		var calls atomic.Int64
		b.ResetTimer()
		var wg sync.WaitGroup
		for i := range publishers {
			wg.Go(func() {
				for calls.Add(1) <= int64(b.N) {
					if _, err := agg.Publish(context.Background(), gens[i].Batch(size, storetest.DuplicateRatio)...); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		reportRate(b, int64(b.N)*int64(size))
	})
}

var _ eventagg.Store = (*eventagg.SQLiteStore)(nil)

// prefilled returns the path of a new copy of a database holding n events
// made by eventgen.New(1, ids), and a generator that continues
// after them. The first call for (ids, n) builds a template in the system's
// temporary directory, which later runs reuse: building 5M events takes a
// minute or two.
func prefilled(b *testing.B, ids string, n int) (string, *eventgen.Generator) {
	b.Helper()
	gen := eventgen.New(1, ids)
	path := filepath.Join(b.TempDir(), "events.db")
	if n == 0 {
		return path, gen
	}
	template := filepath.Join(os.TempDir(), fmt.Sprintf("eventagg-bench-%s-%d-v2.db", ids, n))
	if _, err := os.Stat(template); err != nil {
		b.Logf("building %s (%d events)", template, n)
		s, err := eventagg.OpenSQLite(template+".tmp", &eventagg.SQLiteOptions{Sync: eventagg.SyncOff})
		if err != nil {
			b.Fatal(err)
		}
		build := eventgen.New(1, ids)
		for made := 0; made < n; made += 10000 {
			if _, err := s.Append(context.Background(), build.Batch(min(10000, n-made), 0), eventagg.AppendOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Close(); err != nil { // checkpoints the WAL into the file
			b.Fatal(err)
		}
		if err := os.Rename(template+".tmp", template); err != nil {
			b.Fatal(err)
		}
	}
	data, err := os.ReadFile(template)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	gen.Skip(uint64(n))
	return path, gen
}

// BenchmarkStoredRows measures Publish at batch 1000 (uuid ids, 20%
// duplicates) as the store grows, beside the raw loop on the same data.
// Sizes above 0 run only with EVENTAGG_BENCH_LARGE=1.
func BenchmarkStoredRows(b *testing.B) {
	for _, n := range []int{0, 1_000_000, 5_000_000} {
		b.Run(fmt.Sprintf("stored=%d/raw", n), func(b *testing.B) {
			if n > 0 && os.Getenv("EVENTAGG_BENCH_LARGE") == "" {
				b.Skip("set EVENTAGG_BENCH_LARGE=1 to run")
			}
			path, gen := prefilled(b, "uuid", n)
			if n == 0 {
				s, err := eventagg.OpenSQLite(path, nil) // creates the schema
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
			rawInsert(b, path, gen, 1000)
		})
		b.Run(fmt.Sprintf("stored=%d/publish", n), func(b *testing.B) {
			if n > 0 && os.Getenv("EVENTAGG_BENCH_LARGE") == "" {
				b.Skip("set EVENTAGG_BENCH_LARGE=1 to run")
			}
			path, gen := prefilled(b, "uuid", n)
			agg := MustNew(b, MustOpenSQLite(b, path, nil), nil)
			ctx := context.Background()
			var events int64
			for b.Loop() {
				if _, err := agg.Publish(ctx, gen.Batch(1000, storetest.DuplicateRatio)...); err != nil {
					b.Fatal(err)
				}
				events += 1000
			}
			reportRate(b, events)
		})
	}
}

// BenchmarkRetentionSpace measures the space of an event and of a key kept
// without its event (a dedup window longer than the retention): 100,000
// events with uuid ids and payloads of the generator's 68 bytes, or of 4
// KiB, are stored, all leave keeping their keys, then the keys leave. It
// reports the bytes of used pages (page_count - freelist_count) per event
// and per kept key.
//
//	go test -run '^$' -bench RetentionSpace -benchtime 1x .
func BenchmarkRetentionSpace(b *testing.B) {
	for _, size := range []int{0, 4 << 10} {
		name := "payload=68B"
		if size > 0 {
			name = "payload=4KiB"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				benchRetentionSpace(b, size)
			}
		})
	}
}

func benchRetentionSpace(b *testing.B, size int) {
	path := filepath.Join(b.TempDir(), "events.db")
	s := MustOpenSQLite(b, path, nil)
	gen := eventgen.New(1, "uuid")
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const n = 100_000
	for range n / 1000 {
		batch := gen.Batch(1000, 0)
		if size > 0 {
			for i := range batch {
				batch[i].Payload = []byte(`"` + strings.Repeat("x", size-2) + `"`)
			}
		}
		if _, err := s.Append(context.Background(), batch, eventagg.AppendOptions{AcceptedAt: at}); err != nil {
			b.Fatal(err)
		}
	}
	withEvents := usedBytes(b, path)
	expireAll(b, s, eventagg.ExpireQuery{PayloadsBefore: at.Add(time.Second), KeysBefore: at, Limit: 1000})
	withKeys := usedBytes(b, path)
	expireAll(b, s, eventagg.ExpireQuery{PayloadsBefore: at.Add(time.Second), Limit: 1000})
	base := usedBytes(b, path)
	b.ReportMetric(float64(withEvents-base)/n, "bytes/event")
	b.ReportMetric(float64(withKeys-base)/n, "bytes/kept-key")
}

func expireAll(b *testing.B, s *eventagg.SQLiteStore, q eventagg.ExpireQuery) {
	for {
		res, err := s.Expire(context.Background(), q)
		if err != nil {
			b.Fatal(err)
		}
		if !res.More {
			return
		}
	}
}

// usedBytes returns the bytes of the database's pages that are in use, read
// on a connection of its own.
func usedBytes(b *testing.B, path string) int64 {
	c, err := sqlite3.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var v [3]int64
	for i, q := range []string{"PRAGMA page_count", "PRAGMA freelist_count", "PRAGMA page_size"} {
		stmt, _, err := c.Prepare(q)
		if err != nil {
			b.Fatal(err)
		}
		if stmt.Step() {
			v[i] = stmt.ColumnInt64(0)
		}
		stmt.Close()
	}
	return (v[0] - v[1]) * v[2]
}

// BenchmarkOnce measures process-once deliveries on SQLite: each Once
// claims a new key, runs an empty work function and completes (a durable
// transaction), from 1 and from 32 goroutines; "redelivery" is Once on a
// key done before (a claim that finds it Done), and "publish" the plain
// Publish of one event beside them.
func BenchmarkOnce(b *testing.B) {
	work := func(context.Context) error { return nil }
	for _, workers := range []int{1, 32} {
		b.Run(fmt.Sprintf("new/workers=%d", workers), func(b *testing.B) {
			agg := MustNew(b, MustOpenSQLite(b, filepath.Join(b.TempDir(), "events.db"), nil), nil)
			var n atomic.Int64
			b.SetParallelism(max(workers/runtime.GOMAXPROCS(0), 1))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					e := event("hooks", strconv.FormatInt(n.Add(1), 10))
					if c, err := agg.Once(context.Background(), e, time.Minute, work); err != nil || c.Status != eventagg.Claimed {
						b.Errorf("Once = %+v, %v", c, err)
						return
					}
				}
			})
			reportRate(b, n.Load())
		})
	}
	b.Run("redelivery/workers=1", func(b *testing.B) {
		agg := MustNew(b, MustOpenSQLite(b, filepath.Join(b.TempDir(), "events.db"), nil), nil)
		e := event("hooks", "done")
		if _, err := agg.Once(context.Background(), e, time.Minute, work); err != nil {
			b.Fatal(err)
		}
		var n int64
		for b.Loop() {
			if c, err := agg.Once(context.Background(), e, time.Minute, work); err != nil || c.Status != eventagg.Done {
				b.Fatalf("Once = %+v, %v", c, err)
			}
			n++
		}
		reportRate(b, n)
	})
	b.Run("publish/workers=1", func(b *testing.B) {
		agg := MustNew(b, MustOpenSQLite(b, filepath.Join(b.TempDir(), "events.db"), nil), nil)
		var n int64
		for b.Loop() {
			n++
			if _, err := agg.Publish(context.Background(), event("hooks", strconv.FormatInt(n, 10))); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, n)
	})
}

// BenchmarkRetentionSteady measures Publish of 1000-event batches with uuid
// ids (20% resends) through an Aggregator whose clock moves 10 ms per batch,
// with a retention of 3 s of that clock (300 batches: about 240,000 events
// stay stored) and without one. The store is first filled for the window
// plus a tenth of it, so that with retention every batch is matched by
// expiry; the ratio of the two rates is the cost of expiry at steady state.
//
//	go test -run '^$' -bench RetentionSteady -benchtime 200x .
func BenchmarkRetentionSteady(b *testing.B) {
	for _, retain := range []time.Duration{0, 3 * time.Second} {
		b.Run(fmt.Sprintf("retention=%v", retain), func(b *testing.B) {
			var mu sync.Mutex
			now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			tick := func() { mu.Lock(); now = now.Add(10 * time.Millisecond); mu.Unlock() }
			agg := MustNew(b, MustOpenSQLite(b, filepath.Join(b.TempDir(), "events.db"), nil), &eventagg.Options{Retention: retain, Now: clock})
			gen := eventgen.New(1, "uuid")
			ctx := context.Background()
			for range 330 {
				if _, err := agg.Publish(ctx, gen.Batch(1000, storetest.DuplicateRatio)...); err != nil {
					b.Fatal(err)
				}
				tick()
			}
			var events int64
			for b.Loop() {
				if _, err := agg.Publish(ctx, gen.Batch(1000, storetest.DuplicateRatio)...); err != nil {
					b.Fatal(err)
				}
				tick()
				events += 1000
			}
			reportRate(b, events)
			if st, err := agg.Stats(ctx); err != nil || (retain > 0 && st.Expired == 0) {
				b.Fatalf("Stats() = %+v, %v: with retention, events must have expired", st.Counts, err)
			}
		})
	}
}
