package eventagg

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/eventagg/eventagg/internal/storekit"
)

// Store keeps events and their counters. Applications plug one into [New];
// package driver holds what writing one takes beyond this interface.
//
// Implementations are safe for concurrent use. The [Aggregator] calls Append
// from one goroutine at a time, but Events and Stats may run alongside it.
// [MemoryStore] and [SQLiteStore] are the stores of this package; package
// postgres holds one for several replicas. Package storetest checks that a
// Store meets this contract.
//
// Optional capabilities are small interfaces a Store may also implement,
// each checked once by the Aggregator, each with a documented fallback:
// [Pipeliner] (commit without waiting for durability), [Pinger],
// [StatsQuerier], [MetricsReporter].
type Store interface {
	// Append stores, in one atomic transaction, every event whose (Topic,
	// EventID) is not stored yet, and updates the counters in that same
	// transaction. It returns one [Outcome] per event, in order: Stored,
	// with the Seq it got; Duplicate, if the key is stored already or came
	// earlier in events, with the same payload; Conflict, the same with
	// another payload (byte for byte): the first copy stays as it is.
	// Events are accepted in slice order and get increasing sequence numbers.
	//
	// With opts.RejectConflicts, an event that would be a Conflict makes
	// Append store and count nothing and return a [*ConflictError] naming
	// the first such event.
	//
	// Append does not validate: callers pass events that passed
	// [Event.Validate] with a non-zero Timestamp.
	// On error nothing is stored and no counter moves, with one exception
	// for networked stores: if the connection fails while the commit is in
	// flight, the outcome is unknown and the batch may be stored (resending
	// it is safe). Returns ErrClosed after Close, and ctx.Err() (possibly
	// wrapped) if ctx ends first.
	Append(ctx context.Context, events []Event, opts AppendOptions) ([]Outcome, error)

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

// AppendOptions changes what [Store.Append] does.
type AppendOptions struct {
	// RejectConflicts makes Append fail with a [*ConflictError], storing
	// and counting nothing, if an event conflicts with the stored copy of
	// its key (or with an earlier copy in the same call).
	RejectConflicts bool
	// AcceptedAt is the acceptance time the store records with each event
	// it stores: retention counts from it (see [Expirer]), not from the
	// producer's Timestamp. Zero means the store's clock.
	AcceptedAt time.Time
}

// Expirer is implemented by stores that can remove events once their
// retention window has passed. An [Aggregator] with [Options].Retention
// needs one: it calls Expire from its writer, between commits, in chunks.
//
// Events leave oldest first, in acceptance order (by Seq): an event whose
// acceptance time is past the window waits for the events stored before it.
type Expirer interface {
	Store
	// Expire removes, in one atomic transaction, up to q.Limit of the
	// oldest events accepted before q.PayloadsBefore: they are listed no
	// more, leave the Stored counter and enter the Expired one, per topic.
	// A listing cursor (Query.After) at a removed event goes on from the
	// next. Their keys leave too, unless they were accepted at or after
	// q.KeysBefore (when KeysBefore is before PayloadsBefore): such a key
	// stays, with what judging a later copy takes (a digest of the payload),
	// until a later Expire removes it with the keys accepted before
	// KeysBefore. A copy of a key that left is stored as new.
	// On error nothing is removed and no counter moves.
	Expire(ctx context.Context, q ExpireQuery) (ExpireResult, error)
}

// ExpireQuery says what [Expirer.Expire] removes.
type ExpireQuery struct {
	// PayloadsBefore: events accepted before it leave.
	PayloadsBefore time.Time
	// KeysBefore, if before PayloadsBefore, keeps the keys of the events
	// that leave but were accepted at or after it, so that deduplication
	// outlives the stored events; keys accepted before it leave. Zero, or
	// not before PayloadsBefore: keys leave with their events.
	KeysBefore time.Time
	// Limit bounds the events, and the keys, that one call removes; it
	// must be positive.
	Limit int
}

// ExpireResult is what one [Expirer.Expire] removed.
type ExpireResult struct {
	Events int  // events that left (their payloads): counted as expired
	Keys   int  // keys that left (with their events, or after them)
	More   bool // more events or keys are due: call again
}

// Status says what became of one event of a batch.
type Status uint8

// The statuses of an [Outcome].
const (
	// Stored: the event was stored; it is the first copy of its key.
	Stored Status = iota + 1
	// Duplicate: the key was stored already (or came earlier in the batch)
	// with the same payload, byte for byte. Nothing was stored.
	Duplicate
	// Conflict: the key was stored already (or came earlier in the batch)
	// with a different payload: a producer reused an id, or changed an
	// event it resent. The first copy stays; nothing was stored.
	Conflict
)

// String returns "stored", "duplicate" or "conflict".
func (s Status) String() string {
	switch s {
	case Stored:
		return "stored"
	case Duplicate:
		return "duplicate"
	case Conflict:
		return "conflict"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Outcome is what became of one event given to Publish or Append.
type Outcome struct {
	Status Status
	// Seq is the sequence number the event was stored with, when Status is
	// Stored; 0 otherwise, and from a remote server, which does not say.
	Seq int64
}

// Publisher publishes batches of events. An [*Aggregator] is one, and so is
// the HTTP client of package httpapi, so that code can publish in process or
// to a remote server alike.
type Publisher interface {
	// Publish stores the events whose keys are new and drops the others;
	// see [Aggregator.Publish].
	Publish(ctx context.Context, events ...Event) (Result, error)
}

// Pipeliner is implemented by stores that can commit a batch without waiting
// for it to be durable. The [Aggregator] then commits the next batch while
// the last one is made durable (for [SQLiteStore] under [SyncFull], while its
// log is fsynced), and answers the callers of each batch, in commit order,
// once it is. Without it, the Aggregator calls Append, whose return means
// durable, and answers at once.
//
// A store that wraps another (to add metrics or faults) keeps the capability
// by embedding Pipeline(inner) rather than the inner Store: its methods then
// reach the inner store's AppendAsync and Busy, or their fallbacks.
type Pipeliner interface {
	Store
	// AppendAsync is Append, except that it returns once the transaction
	// is committed, before it is durable: wait returns nil once it is
	// durable, or the error that makes its durability unknown (after which
	// every later wait fails too). The Aggregator calls each wait once, in
	// commit order, from another goroutine than AppendAsync's. The outcomes
	// are final when AppendAsync returns. An error from AppendAsync itself
	// means what an error from Append means; wait is then nil.
	AppendAsync(ctx context.Context, events []Event, opts AppendOptions) (outcomes []Outcome, wait func() error, err error)
	// Busy returns nil when a commit made now would start becoming durable
	// at once, or else a channel that is closed once it would: until then
	// a commit would only wait behind an earlier one, so the Aggregator
	// gathers more calls into its next commit instead.
	Busy() <-chan struct{}
}

// Pipeline returns s as a [Pipeliner]: s itself if it is one, and otherwise
// s with an AppendAsync that calls Append and returns a wait that returns
// nil at once, and a Busy that returns nil.
func Pipeline(s Store) Pipeliner {
	if p, ok := s.(Pipeliner); ok {
		return p
	}
	return syncStore{s}
}

// syncStore is a Store whose Append returns once the batch is durable.
type syncStore struct{ Store }

func (s syncStore) AppendAsync(ctx context.Context, events []Event, opts AppendOptions) ([]Outcome, func() error, error) {
	outcomes, err := s.Append(ctx, events, opts)
	if err != nil {
		return nil, nil, err
	}
	return outcomes, durable, nil
}

func (syncStore) Busy() <-chan struct{} { return nil }

// durable is the wait of a commit that is durable already.
func durable() error { return nil }

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

// PageBytes bounds the payload bytes of one page of a listing that this
// module's stores read: a page stops once its payloads reach PageBytes (it
// holds at least one event), so that a listing of large events holds little
// memory.
const PageBytes = 1 << 20

// paginate is [driver.Paginate] for this package's stores.
func paginate(q Query, pageSize int, fetch func(dst []Event, after int64, n int) ([]Event, error)) iter.Seq2[Event, error] {
	return storekit.Paginate(q.After, q.Limit, pageSize, PageBytes, fetch, seqOf, payloadSize)
}

func seqOf(e *Event) int64     { return e.Seq }
func payloadSize(e *Event) int { return len(e.Payload) }

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

// ConflictError reports the first event of a batch that conflicts with the
// stored copy of its key (see [Conflict]), when conflicts are rejected
// ([Options].RejectConflicts, [AppendOptions].RejectConflicts). Nothing of
// the batch was stored or counted.
type ConflictError struct {
	Index int // position of the event in the batch given to Publish or Append
	Key   Key
}

// Error implements the error interface.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("eventagg: event %d: payload: differs from the stored copy of topic %q, event_id %q (the first copy is kept; use another event_id for another event)",
		e.Index, e.Key.Topic, e.Key.EventID)
}

// Unwrap returns [ErrConflict].
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Errors returned by this package. Match them with [errors.Is].
var (
	// ErrClosed is returned by an Aggregator or Store used after Close.
	ErrClosed = errors.New("eventagg: closed")
	// ErrQueueFull is returned by Publish when its context ends while it waits
	// for room in the Aggregator's queue. The batch was not stored.
	ErrQueueFull = errors.New("eventagg: queue full")
	// ErrStore wraps an error from the Store during Publish, Events or
	// Stats. For Publish: the batch was not stored and no counter moved
	// (for a networked store, unless the connection failed during the
	// commit; see Store.Append). The store's own error is wrapped too.
	// Resending the batch is safe.
	ErrStore = errors.New("eventagg: store failed")
	// ErrConflict is matched by every [*ConflictError].
	ErrConflict = errors.New("eventagg: conflicting duplicate")
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
