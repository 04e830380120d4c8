package eventagg

import (
	"context"
	"errors"
	"iter"
)

// Store keeps events and their counters.
//
// Implementations are safe for concurrent use. The [Aggregator] calls Append
// from one goroutine at a time, but Events and Stats may run alongside it.
// [MemoryStore] and [SQLiteStore] are the stores of this package; package
// postgres holds one for several replicas. Package storetest checks that a
// Store meets this contract.
type Store interface {
	// Append stores, in one atomic transaction, every event whose (Topic, EventID)
	// is not stored yet, and updates the counters in that same transaction.
	// It returns, for each input, whether it was stored (true) or was a duplicate
	// (false); a later copy of a key within the same call is a duplicate.
	// Events are accepted in slice order and get increasing sequence numbers.
	// Append does not validate: callers pass events that passed [Event.Validate]
	// with a non-zero Timestamp.
	// On error nothing is stored and no counter moves, with one exception
	// for networked stores: if the connection fails while the commit is in
	// flight, the outcome is unknown and the batch may be stored (resending
	// it is safe). Returns ErrClosed after Close, and ctx.Err() (possibly
	// wrapped) if ctx ends first.
	Append(ctx context.Context, events []Event) ([]bool, error)

	// Events lists stored events matching q in acceptance order, with Seq set.
	// The sequence may be run more than once; each run reads afresh. An error
	// is yielded at most once, as the last element. Breaking out of the loop
	// releases whatever the run holds. Yields ErrClosed after Close.
	Events(ctx context.Context, q Query) iter.Seq2[Event, error]

	// Stats returns the counters, with totals equal to the sums of the topics.
	// Returns ErrClosed after Close.
	Stats(ctx context.Context) (Stats, error)

	// Close releases the store. Calls after the first return nil.
	Close() error
}

// Pinger is implemented by stores that can check their health more cheaply
// than [Store.Stats]. [Aggregator.Ping] uses it when present.
type Pinger interface {
	// Ping returns nil if the store can serve requests, or why it cannot.
	Ping(ctx context.Context) error
}

// Query selects events to list.
type Query struct {
	// Topic, if not empty, restricts the listing to one topic.
	Topic string
	// After, if positive, lists only events with a Seq greater than After:
	// pass the Seq of the last event of a page to get the next page.
	After int64
	// Limit, if positive, is the most events listed.
	Limit int
}

// Paginate returns the listing of events matching q as Store.Events must
// give it, read page by page: fetch appends to dst up to n events of
// q.Topic with a Seq above after, in Seq order, and returns dst. Paginate
// asks for pages of at most pageSize events, stops after q.Limit events or at
// the first short page, and yields fetch's error, if any, once and last.
// Stores use it so that a listing holds no connection, lock or transaction
// between pages, and memory stays flat however many events it lists.
func Paginate(q Query, pageSize int, fetch func(dst []Event, after int64, n int) ([]Event, error)) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		after, left := max(q.After, 0), q.Limit
		var page []Event
		for {
			n := pageSize
			if q.Limit > 0 {
				if left <= 0 {
					return
				}
				n = min(n, left)
			}
			var err error
			if page, err = fetch(page[:0], after, n); err != nil {
				yield(Event{}, err)
				return
			}
			for _, e := range page {
				if !yield(e, nil) {
					return
				}
			}
			if len(page) < n {
				return
			}
			after = page[len(page)-1].Seq
			left -= len(page)
		}
	}
}

// Errors returned by this package. Match them with [errors.Is].
var (
	// ErrClosed is returned by an Aggregator or Store used after Close.
	ErrClosed = errors.New("eventagg: closed")
	// ErrQueueFull is returned by Publish when its context ends while it waits
	// for room in the Aggregator's queue. The batch was not stored.
	ErrQueueFull = errors.New("eventagg: queue full")
	// ErrStore wraps an error from the Store during Publish: the batch was not
	// stored and no counter moved (for a networked store, unless the
	// connection failed during the commit; see Store.Append). The store's own
	// error is wrapped too. Resending the batch is safe.
	ErrStore = errors.New("eventagg: store failed")
)
