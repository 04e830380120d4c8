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

// PageBytes bounds the payload bytes of one page of a listing read with
// [Paginate]: a fetch may stop adding events to a page once their payloads
// reach PageBytes (a page holds at least one event), so that a listing of
// large events holds little memory.
const PageBytes = 1 << 20

// Paginate returns the listing of events matching q as Store.Events must
// give it, read page by page: fetch appends to dst up to n events of
// q.Topic with a Seq above after, in Seq order, and returns dst; it may
// stop early once the payloads it appended reach [PageBytes]. Paginate
// stops after q.Limit events or at the first page that is short of both
// bounds, and yields fetch's error, if any, once and last.
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
				clear(page)
				yield(Event{}, err)
				return
			}
			bytes := 0
			for i, e := range page {
				bytes += len(e.Payload)
				after = e.Seq
				page[i] = Event{} // the page's buffer outlives it: keep no payload
				if !yield(e, nil) {
					return
				}
			}
			if len(page) == 0 || (len(page) < n && bytes < PageBytes) {
				return
			}
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
	// ErrFull is matched by the error of a write refused for want of space:
	// the disk or file system is full (ENOSPC), or a size cap such as
	// [SQLiteOptions].MaxSizeBytes is reached. Nothing was stored; the same
	// write succeeds once there is room again. The cause is wrapped too.
	ErrFull = errors.New("eventagg: no space left for the store")
	// ErrDamaged is matched by every error of a store that can no longer
	// vouch for what it acknowledges: its files were deleted, replaced or
	// truncated under it, it read corrupt data, or an fsync failed. The
	// condition is sticky: the store refuses every write, and [Pinger.Ping]
	// reports it, until the files are repaired and the store is reopened.
	// The first cause is wrapped too.
	ErrDamaged = errors.New("eventagg: store damaged")
)

// StoreMetric is one sample of a store's own instrumentation, such as the
// size of SQLite's write-ahead log. Type is "gauge" or "counter"; Name is a
// Prometheus metric name and Help its one-line description.
type StoreMetric struct {
	Name, Help, Type string
	Value            float64
}

// MetricsReporter is implemented by stores that report metrics of their own.
// [Aggregator.StoreMetrics] returns them, and package httpapi serves them
// on /metrics beside the Aggregator's.
type MetricsReporter interface {
	// StoreMetrics returns the store's current samples, in a stable order.
	// It must be cheap (no queries) and safe to call at any time, even
	// after Close.
	StoreMetrics() []StoreMetric
}
