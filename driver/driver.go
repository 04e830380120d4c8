// Package driver is for those who write an [eventagg.Store]: the helpers
// this module's own stores use, so that a new store gets the same paging,
// in-batch deduplication, conflict detection and counter arithmetic.
// Applications need package eventagg only.
//
// A store implements [eventagg.Store], and may implement the optional
// capabilities documented there ([eventagg.Pipeliner], [eventagg.Pinger],
// [eventagg.StatsQuerier], [eventagg.MetricsReporter]). Check it with
// package storetest:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{Open: func(t testing.TB) eventagg.Store { return open(t) }})
//	}
//
// A store that wraps another keeps the inner store's capabilities by
// embedding [eventagg.Pipeline](inner) and forwarding the other optional
// methods.
package driver

import (
	"iter"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/internal/storekit"
)

// Paginate returns the listing of events matching q as Store.Events must
// give it, read page by page: fetch appends to dst up to n events of
// q.Topic with a Seq above after, in Seq order, and returns dst; it may
// stop early once the payloads it appended reach [eventagg.PageBytes].
// Paginate stops after q.Limit events or at the first page that is short of
// both bounds, and yields fetch's error, if any, once and last. Between
// pages the listing holds nothing of the store's (no connection, lock or
// transaction), and memory stays flat however many events it lists.
func Paginate(q eventagg.Query, pageSize int, fetch func(dst []eventagg.Event, after int64, n int) ([]eventagg.Event, error)) iter.Seq2[eventagg.Event, error] {
	return storekit.Paginate(q.After, q.Limit, pageSize, eventagg.PageBytes, fetch,
		func(e *eventagg.Event) int64 { return e.Seq }, func(e *eventagg.Event) int { return len(e.Payload) })
}

// FirstInBatch reports, for each event, whether it is the first in events
// with its [eventagg.Key]. A later copy of a key within the same slice is a
// duplicate (or a conflict) of the earlier one.
func FirstInBatch(events []eventagg.Event) []bool {
	return storekit.FirstInBatch(len(events), func(i int) eventagg.Key { return events[i].Key() })
}

// HashSize is the length of a [PayloadHash].
const HashSize = storekit.HashSize

// PayloadHash returns the digest by which stores compare a payload with the
// stored copy's (the first 16 bytes of its SHA-256): a copy whose payload
// has another digest is a [eventagg.Conflict]. Stores keep it with the
// event, so that the comparison reads 16 bytes rather than the payload.
func PayloadHash(payload []byte) []byte { return storekit.PayloadHash(payload) }

// CountOutcomes returns, per topic, the counters that appending events with
// outcomes moves, as a store adds them in the same transaction.
func CountOutcomes(events []eventagg.Event, outcomes []eventagg.Outcome) map[string]eventagg.Counts {
	topics := make(map[string]eventagg.Counts, 1)
	for i := range events {
		c := topics[events[i].Topic]
		c.Count(outcomes[i].Status)
		topics[events[i].Topic] = c
	}
	return topics
}

// SelectTopics returns the counters of the topics q selects from all, the
// counters of every topic: what a store that keeps its topics in memory
// answers to [eventagg.StatsQuerier].
func SelectTopics(all map[string]eventagg.Counts, q eventagg.StatsQuery) map[string]eventagg.Counts {
	return storekit.SelectNames(all, q.TopicsAfter, q.TopicsLimit)
}

// FromNanos returns the UTC time ns nanoseconds after the Unix epoch: how a
// store that keeps timestamps as nanoseconds reads them back.
func FromNanos(ns int64) time.Time { return storekit.FromNanos(ns) }
