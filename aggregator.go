package eventagg

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Options configures an [Aggregator]. The zero value is the default.
type Options struct {
	// MaxBatch bounds how many events the writer merges into one Store.Append;
	// default 4096. A single Publish call larger than MaxBatch is written alone:
	// calls are never split.
	MaxBatch int
	// QueueSize bounds how many Publish calls wait for the writer; default 1024.
	// When the queue is full, Publish blocks until there is room, its context
	// ends, or QueueTimeout passes.
	QueueSize int
	// QueueTimeout, if positive, bounds how long Publish waits for room in a
	// full queue before it returns ErrQueueFull. Default: as long as its
	// context allows. A server sets it to refuse load quickly (HTTP 503).
	QueueTimeout time.Duration
	// Logger receives a debug record for each duplicate dropped (topic and
	// event_id, never the payload) and an error record for each failed write.
	// Default: no logging.
	Logger *slog.Logger
	// Now stamps events published with a zero Timestamp; default time.Now.
	Now func() time.Time
}

// Result tells what Publish did with a batch.
type Result struct {
	// Processed is the number of events stored by this call.
	Processed int `json:"processed_count"`
	// Duplicates is the number of events dropped because their key was
	// already stored, or appeared earlier in the batch.
	Duplicates int `json:"duplicate_dropped"`
	// New holds, for each event given to Publish, whether it was stored now
	// (true) or dropped as a duplicate (false).
	New []bool `json:"-"`
}

// Aggregator deduplicates and stores batches of events through a [Store].
//
// Concurrent Publish calls are queued to a single writer goroutine, which
// merges what is waiting into one Store.Append (group commit), so many small
// batches share one transaction and one fsync.
//
// An Aggregator is safe for concurrent use. Close it when done; closing the
// store stays with the caller, after Close.
type Aggregator struct {
	store    Store
	maxBatch int
	qTimeout time.Duration
	now      func() time.Time
	log      *slog.Logger
	started  time.Time

	queue   chan *request
	pipe    pipelinedStore // the store, if it is pipelined
	acks    chan written   // written batches waiting to be durable, in commit order
	mu      sync.RWMutex   // guards closed against senders.Add
	closed  bool
	closing chan struct{}  // closed when Close starts
	senders sync.WaitGroup // Publish calls that may still send to queue
	stopped chan struct{}  // closed when the writer has drained the queue
	once    sync.Once
}

// request is one Publish call waiting for the writer.
type request struct {
	ctx    context.Context
	events []Event
	reply  chan reply // buffered; receives exactly one reply
}

type reply struct {
	res Result
	err error
}

// New returns an Aggregator writing to store and starts its writer goroutine.
// opts may be nil.
func New(store Store, opts *Options) (*Aggregator, error) {
	if store == nil {
		return nil, fmt.Errorf("eventagg: New needs a Store")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 4096
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Aggregator{
		store:    store,
		maxBatch: o.MaxBatch,
		qTimeout: o.QueueTimeout,
		now:      o.Now,
		log:      o.Logger,
		started:  o.Now(),
		queue:    make(chan *request, o.QueueSize),
		closing:  make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	if p, ok := store.(pipelinedStore); ok {
		a.pipe = p
		a.acks = make(chan written, 64)
		go a.ack()
	}
	go a.write()
	return a, nil
}

// Publish validates events, then stores those whose (Topic, EventID) is not
// stored yet and drops the others as duplicates. Events with a zero Timestamp
// are stamped with the current time; the caller's slice is not modified.
//
// The batch is validated whole before anything is written: if an event is
// invalid, Publish returns a [*ValidationError] and nothing of the batch is
// stored or counted. A nil error means the batch is durable: the transaction
// holding it has committed.
//
// Errors:
//   - [*ValidationError] (matching [ErrInvalidEvent]) for an invalid event;
//   - [ErrClosed] after Close;
//   - [ErrQueueFull] if ctx ends (the error wraps ctx's too) or
//     [Options].QueueTimeout passes while Publish waits for room in the
//     queue: nothing was stored;
//   - [ErrStore], wrapping the store's error, if the write failed: nothing
//     was stored or counted;
//   - ctx's error if ctx ends while the batch is being written: it may or may
//     not have been stored. Resending is safe: it is deduplicated.
func (a *Aggregator) Publish(ctx context.Context, events ...Event) (Result, error) {
	if err := ValidateBatch(events); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	a.mu.RLock()
	if a.closed {
		a.mu.RUnlock()
		return Result{}, ErrClosed
	}
	a.senders.Add(1)
	a.mu.RUnlock()
	if len(events) == 0 {
		a.senders.Done()
		return Result{New: []bool{}}, nil
	}

	req := &request{ctx: ctx, events: slices.Clone(events), reply: make(chan reply, 1)}
	var now time.Time
	for i := range req.events {
		if req.events[i].Timestamp.IsZero() {
			if now.IsZero() {
				now = a.now().UTC()
			}
			req.events[i].Timestamp = now
		}
	}
	if err := a.enqueue(ctx, req); err != nil {
		return Result{}, err
	}
	select {
	case r := <-req.reply:
		return r.res, r.err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// enqueue hands req to the writer, waiting for room if the queue is full.
func (a *Aggregator) enqueue(ctx context.Context, req *request) error {
	defer a.senders.Done()
	select {
	case a.queue <- req:
		return nil
	default: // full: wait
	}
	var timeout <-chan time.Time
	if a.qTimeout > 0 {
		t := time.NewTimer(a.qTimeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case a.queue <- req:
		return nil
	case <-a.closing:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrQueueFull, ctx.Err())
	case <-timeout:
		return fmt.Errorf("%w: waited %v", ErrQueueFull, a.qTimeout)
	}
}

// write is the writer goroutine: it merges queued requests into batches of at
// most maxBatch events (one request may exceed it alone) until the queue is
// closed and drained.
func (a *Aggregator) write() {
	if a.pipe != nil {
		defer close(a.acks) // the acker then finishes and closes stopped
	} else {
		defer close(a.stopped)
	}
	var (
		reqs  []*request
		batch []Event
		next  *request // taken from the queue but left for the next batch
	)
	for {
		if next == nil {
			var ok bool
			if next, ok = <-a.queue; !ok {
				return
			}
		}
		reqs = append(reqs[:0], next)
		n := len(next.events)
		next = nil
		// Take what waits now and, with a pipelined store, also what
		// arrives while a commit now would gain nothing on a later one.
		var syncing <-chan struct{}
		if a.pipe != nil {
			syncing = a.pipe.syncing()
		}
	gather:
		for n < a.maxBatch {
			var r *request
			var ok bool
			select {
			case r, ok = <-a.queue:
			default:
				if syncing == nil {
					break gather
				}
				select {
				case r, ok = <-a.queue:
				case <-syncing:
					break gather
				}
			}
			if !ok {
				break gather
			}
			if n+len(r.events) > a.maxBatch {
				next = r
				break gather
			}
			reqs, n = append(reqs, r), n+len(r.events)
		}
		batch = a.commit(reqs, batch[:0])
		clear(reqs) // let the requests be collected
	}
}

// written is a batch the store committed (or failed to), waiting to be
// answered.
type written struct {
	reqs    []*request
	isNew   []bool
	durable func() error // nil once known durable
	err     error
}

// commit writes the events of reqs in one transaction and replies to each
// request, at once or, with a pipelined store, through the acker once the
// transaction is durable. It returns batch, the reusable buffer.
func (a *Aggregator) commit(reqs []*request, batch []Event) []Event {
	live := reqs[:0]
	for _, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.reply <- reply{err: err} // the caller has gone; write nothing for it
			continue
		}
		live = append(live, r)
		batch = append(batch, r.events...)
	}
	if len(batch) == 0 {
		return batch
	}
	ctx := context.Background()
	var w written
	if a.pipe != nil {
		w.reqs = slices.Clone(live) // reqs is reused before the acker is done
		w.isNew, w.durable, w.err = a.pipe.appendNoWait(ctx, batch)
	} else {
		w.reqs = live
		w.isNew, w.err = a.store.Append(ctx, batch)
	}
	if w.err == nil && len(w.isNew) != len(batch) {
		w.err = fmt.Errorf("Append returned %d results for %d events", len(w.isNew), len(batch))
	}
	clear(batch) // drop references to payloads
	if a.pipe != nil {
		a.acks <- w
	} else {
		a.answer(w)
	}
	return batch
}

// ack is the acker goroutine of a pipelined store: it waits, in commit
// order, for each written batch to be durable, then answers its callers.
func (a *Aggregator) ack() {
	defer close(a.stopped)
	for w := range a.acks {
		if w.err == nil {
			w.err = w.durable()
		}
		a.answer(w)
	}
}

// answer replies to the callers of a written batch, each with its own part.
func (a *Aggregator) answer(w written) {
	ctx := context.Background()
	if w.err != nil {
		events := 0
		for _, r := range w.reqs {
			events += len(r.events)
		}
		a.log.LogAttrs(ctx, slog.LevelError, "eventagg: append failed",
			slog.Int("events", events), slog.Int("calls", len(w.reqs)), slog.Any("error", w.err))
		err := fmt.Errorf("%w: %w", ErrStore, w.err)
		for _, r := range w.reqs {
			r.reply <- reply{err: err}
		}
		return
	}
	logDups := a.log.Enabled(ctx, slog.LevelDebug)
	off := 0
	for _, r := range w.reqs {
		res := Result{New: w.isNew[off : off+len(r.events) : off+len(r.events)]}
		for i, stored := range res.New {
			if stored {
				res.Processed++
				continue
			}
			res.Duplicates++
			if logDups {
				a.log.LogAttrs(ctx, slog.LevelDebug, "eventagg: duplicate dropped",
					slog.String("topic", r.events[i].Topic), slog.String("event_id", r.events[i].EventID))
			}
		}
		off += len(r.events)
		r.reply <- reply{res: res}
	}
}

// pipelinedStore is implemented by stores that can commit a batch without
// waiting for it to be durable; the Aggregator then answers callers from a
// second goroutine while the writer goes on with the next batch.
type pipelinedStore interface {
	appendNoWait(ctx context.Context, events []Event) (isNew []bool, durable func() error, err error)
	// syncing returns, while a commit made now would be made durable no
	// sooner than one made later, a channel closed when that changes; nil
	// otherwise. Until then the writer gathers calls into its next batch.
	syncing() <-chan struct{}
}

// Events lists stored events matching q in acceptance order; see [Store.Events].
// It reads from the store directly and works until the store is closed.
// An error of the store is wrapped in [ErrStore], as with Publish; ctx's
// error is not.
func (a *Aggregator) Events(ctx context.Context, q Query) iter.Seq2[Event, error] {
	events := a.store.Events(ctx, q)
	return func(yield func(Event, error) bool) {
		for e, err := range events {
			if !yield(e, readError(ctx, err)) {
				return
			}
		}
	}
}

// readError wraps err, an error of a read from the store, in ErrStore,
// unless it is nil or comes from ctx.
func readError(ctx context.Context, err error) error {
	if err == nil || (ctx.Err() != nil && errors.Is(err, ctx.Err())) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrStore, err)
}

// Stats returns the store's counters with StartedAt set to when the
// Aggregator was created. An error of the store is wrapped in [ErrStore].
func (a *Aggregator) Stats(ctx context.Context) (Stats, error) {
	s, err := a.store.Stats(ctx)
	if err != nil {
		return Stats{}, readError(ctx, err)
	}
	s.StartedAt = a.started
	return s, nil
}

// QueryStats returns the store's totals, its number of topics, and the
// counters of the topics q selects (see [QueryStats]), with StartedAt set.
// Unlike Stats, it holds no more than a page of topics in memory when the
// store implements [StatsQuerier], as this package's stores do.
func (a *Aggregator) QueryStats(ctx context.Context, q StatsQuery) (Stats, error) {
	s, err := QueryStats(ctx, a.store, q)
	if err != nil {
		return Stats{}, readError(ctx, err)
	}
	s.StartedAt = a.started
	return s, nil
}

// StartedAt returns when the Aggregator was created.
func (a *Aggregator) StartedAt() time.Time { return a.started }

// Ping reports whether the Aggregator can serve requests: it returns
// [ErrClosed] after Close, and otherwise asks the store, using [Pinger] when
// the store implements it and Stats when not.
func (a *Aggregator) Ping(ctx context.Context) error {
	a.mu.RLock()
	closed := a.closed
	a.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if p, ok := a.store.(Pinger); ok {
		return p.Ping(ctx)
	}
	_, err := a.store.Stats(ctx)
	return err
}

// StoreMetrics returns the store's own metrics if it implements
// [MetricsReporter], and nil if not.
func (a *Aggregator) StoreMetrics() []StoreMetric {
	if r, ok := a.store.(MetricsReporter); ok {
		return r.StoreMetrics()
	}
	return nil
}

// QueueLen returns how many Publish calls wait for the writer now.
func (a *Aggregator) QueueLen() int { return len(a.queue) }

// Close stops accepting Publish calls, waits until every call already queued
// has been written and answered, and returns. It does not close the store.
// Publish calls waiting for room in the queue return [ErrClosed].
// Close is safe to call more than once and from several goroutines; every
// call returns after the queue is drained.
func (a *Aggregator) Close() error {
	a.once.Do(func() {
		a.mu.Lock()
		a.closed = true
		close(a.closing)
		a.mu.Unlock()
		a.senders.Wait()
		close(a.queue)
	})
	<-a.stopped
	return nil
}
