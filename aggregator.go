package eventagg

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventagg/eventagg/internal/loglimit"
)

// Defaults of [Options].
const (
	DefaultMaxEventsPerCommit = 4096 // events merged into one Store.Append
	DefaultQueueSize          = 1024 // Publish calls waiting for the writer
)

// Options configures an [Aggregator]. The zero value is the default.
type Options struct {
	// MaxEventsPerCommit bounds how many events the writer merges into one
	// Store.Append; default DefaultMaxEventsPerCommit. A single Publish call
	// larger than that is written alone: calls are never split.
	MaxEventsPerCommit int
	// QueueSize bounds how many Publish calls wait for the writer; default
	// DefaultQueueSize. When the queue is full, Publish blocks until there
	// is room, its context ends, or QueueTimeout passes.
	QueueSize int
	// QueueTimeout, if positive, bounds how long Publish waits for room in a
	// full queue before it returns ErrQueueFull. Default: as long as its
	// context allows. A server sets it to refuse load quickly (HTTP 503).
	QueueTimeout time.Duration
	// RejectConflicts refuses, whole, a Publish call holding an event that
	// conflicts with the stored copy of its key (a duplicate with another
	// payload, see [Conflict]): the call stores and counts nothing and
	// returns a [*ConflictError]. The calls merged with it are written
	// without it. Default: a conflict is dropped like a duplicate, and
	// counted as a conflict.
	RejectConflicts bool
	// Retention, if positive, is how long an event stays in the store after
	// it was accepted: then it leaves, oldest first, and is counted as
	// expired (see [Expirer], which the store must implement). The writer
	// removes expired events in chunks between commits, so that expiry
	// keeps up with ingest without stalling it. Default: forever.
	Retention time.Duration
	// DedupWindow, if longer than Retention, is how long the key of an
	// event stays after it was accepted: a copy arriving after the event
	// left, but within DedupWindow, is still dropped as a duplicate (or
	// counted a conflict), at a fraction of the space of the event. By
	// default a key leaves with its event, and a copy arriving later is
	// stored as new, as with NATS JetStream's or SQS's duplicate windows.
	DedupWindow time.Duration
	// Logger receives a debug record for each duplicate or conflict dropped
	// (topic and event_id, never the payload) and an error record for each
	// failed write. Default: no logging.
	Logger *slog.Logger
	// Now stamps events published with a zero Timestamp; default time.Now.
	Now func() time.Time
}

// Result tells what Publish did with a batch.
type Result struct {
	// Processed is the number of events stored by this call.
	Processed int `json:"processed_count"`
	// Duplicates is the number of events dropped because their key was
	// already stored, or appeared earlier in the batch; conflicts included.
	Duplicates int `json:"duplicate_dropped"`
	// Conflicts is the number of those duplicates whose payload differed
	// from the stored copy's.
	Conflicts int `json:"conflicts"`
	// Outcomes holds, for each event given to Publish, what became of it.
	Outcomes []Outcome `json:"-"`
}

// Aggregator deduplicates and stores batches of events through a [Store].
//
// Concurrent Publish calls are queued to a single writer goroutine, which
// merges what is waiting into one commit (group commit), so many small
// batches share one transaction and one fsync. With a [Pipeliner] store the
// writer commits the next batch while the last one is made durable.
//
// An Aggregator is safe for concurrent use. Shut it down when done; closing
// the store stays with the caller, after Shutdown.
type Aggregator struct {
	store    Store     // as given: its optional capabilities
	pipe     Pipeliner // Pipeline(store): the write path
	maxBatch int
	qTimeout time.Duration
	reject   bool
	now      func() time.Time

	// Retention: expirer is the store when Retention is set, nil otherwise.
	expirer   Expirer
	retain    time.Duration // how long events stay
	dedupFor  time.Duration // how long keys stay: at least retain
	expireDue bool          // the last Expire had more to do; the writer's
	expireLog time.Time     // when a failed Expire was last logged
	log       *slog.Logger
	failLog   *loglimit.Limiter // failed appends: at most one record a second
	started   time.Time

	// Following (see Tail): the acker wakes waiting Tails after each
	// durable commit; durability tells them which events they may hand out.
	wakeup     wakeup
	durability durability
	watcher    Watcher // the store, if it is one; nil otherwise
	watchOnce  sync.Once

	// ctx is the writer's: it ends when Shutdown gives up on the drain.
	ctx    context.Context
	cancel context.CancelFunc

	queue   chan *request
	pending atomic.Int64 // calls queued and not answered yet
	acks    chan written // committed batches waiting to be durable, in commit order
	mu      sync.RWMutex // guards closed against senders.Add
	closed  bool
	closing chan struct{}  // closed when Shutdown starts
	senders sync.WaitGroup // Publish calls that may still send to queue
	stopped chan struct{}  // closed when every call queued has been answered
	once    sync.Once
}

// request is one Publish call waiting for the writer.
type request struct {
	ctx     context.Context
	events  []Event
	reply   chan reply    // buffered; receives exactly one reply, through answer
	pending *atomic.Int64 // the Aggregator's count of calls queued and not answered
}

// answer sends r its one reply. The count goes down first: once the caller
// has its reply, a Shutdown it calls must not count the call as pending.
func (r *request) answer(rep reply) {
	r.pending.Add(-1)
	r.reply <- rep // buffered: never blocks
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
	if o.MaxEventsPerCommit <= 0 {
		o.MaxEventsPerCommit = DefaultMaxEventsPerCommit
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var expirer Expirer
	switch {
	case o.Retention < 0 || o.DedupWindow < 0:
		return nil, fmt.Errorf("eventagg: Retention and DedupWindow must not be negative")
	case o.DedupWindow > 0 && o.DedupWindow < o.Retention:
		return nil, fmt.Errorf("eventagg: DedupWindow (%v) is shorter than Retention (%v): a key cannot leave before its event", o.DedupWindow, o.Retention)
	case o.DedupWindow > 0 && o.Retention == 0:
		return nil, fmt.Errorf("eventagg: DedupWindow needs a Retention: without one, events and their keys stay forever")
	case o.Retention > 0:
		var ok bool
		if expirer, ok = store.(Expirer); !ok {
			return nil, fmt.Errorf("eventagg: Retention needs a store that implements Expirer; %T does not", store)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Aggregator{
		store:    store,
		pipe:     Pipeline(store),
		maxBatch: o.MaxEventsPerCommit,
		qTimeout: o.QueueTimeout,
		reject:   o.RejectConflicts,
		expirer:  expirer,
		retain:   o.Retention,
		dedupFor: max(o.DedupWindow, o.Retention),
		now:      o.Now,
		log:      o.Logger,
		failLog:  loglimit.New(time.Second),
		started:  o.Now(),
		ctx:      ctx,
		cancel:   cancel,
		queue:    make(chan *request, o.QueueSize),
		acks:     make(chan written, 64),
		closing:  make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	_, a.durability.guard = store.(Pipeliner)
	a.durability.seq.Store(-1)
	a.watcher, _ = store.(Watcher)
	go a.write()
	go a.ack()
	return a, nil
}

// Publish validates events, then stores those whose (Topic, EventID) is not
// stored yet and drops the others as duplicates (or conflicts, when their
// payload differs from the stored copy's). Events with a zero Timestamp are
// stamped with the current time; the caller's slice is not modified.
//
// The batch is validated whole before anything is written: if an event is
// invalid, Publish returns a [*ValidationError] and nothing of the batch is
// stored or counted. A nil error means the batch is durable: the transaction
// holding it has committed (and, with SQLiteStore's SyncFull, reached the disk).
//
// Errors:
//   - [*ValidationError] (matching [ErrInvalidEvent]) for an invalid event;
//   - [*ConflictError] (matching [ErrConflict]) with [Options].RejectConflicts,
//     for a batch holding a conflict: nothing was stored or counted;
//   - [ErrClosed] after Shutdown, or if Shutdown gave up before the batch
//     was written: nothing was stored;
//   - [ErrQueueFull] if ctx ends (the error wraps ctx's too) or
//     [Options].QueueTimeout passes while Publish waits for room in the
//     queue: nothing was stored;
//   - [ErrStore], wrapping the store's error, if the write failed: nothing
//     was stored or counted, unless the store could not tell (a PostgreSQL
//     commit in doubt, an fsync that failed after a SQLite commit): the
//     batch may then be stored, and resending it is safe;
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
		return Result{Outcomes: []Outcome{}}, nil
	}

	req := &request{ctx: ctx, events: slices.Clone(events), reply: make(chan reply, 1), pending: &a.pending}
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
	a.pending.Add(1) // before the writer can take it
	select {
	case a.queue <- req:
		return nil
	default: // full: wait
	}
	queued := false
	defer func() {
		if !queued {
			a.pending.Add(-1)
		}
	}()
	var timeout <-chan time.Time
	if a.qTimeout > 0 {
		t := time.NewTimer(a.qTimeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case a.queue <- req:
		queued = true
		return nil
	case <-a.closing:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrQueueFull, ctx.Err())
	case <-timeout:
		return fmt.Errorf("%w: waited %v", ErrQueueFull, a.qTimeout)
	}
}

// write is the writer goroutine: it gathers queued requests into batches of
// at most maxBatch events (one request may exceed it alone) and commits
// each, until the queue is closed and drained. While the store is Busy (a
// commit now would only wait behind the last one), it goes on gathering.
func (a *Aggregator) write() {
	defer close(a.acks) // the acker then answers what is left and closes stopped
	var (
		reqs  []*request
		batch []Event
		next  *request // taken from the queue but left for the next batch
		tick  <-chan time.Time
	)
	if a.expirer != nil {
		t := time.NewTicker(expireEvery(a.retain))
		defer t.Stop()
		tick = t.C
	}
	for {
		if next == nil {
			var ok bool
			select {
			case next, ok = <-a.queue:
				if !ok {
					return
				}
			case <-tick:
				// Idle, or between commits: expire what is due, a chunk at a
				// time, while no call waits.
				for a.expire() > 0 && a.expireDue && len(a.queue) == 0 {
				}
				continue
			}
		}
		reqs = append(reqs[:0], next)
		n := len(next.events)
		next = nil
		busy := a.pipe.Busy()
	gather:
		for n < a.maxBatch {
			var r *request
			var ok bool
			select {
			case r, ok = <-a.queue:
			default:
				if busy == nil {
					break gather
				}
				select {
				case r, ok = <-a.queue:
				case <-busy:
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
		// Under load, as many events may leave between commits as this one
		// stored, in chunks, so that expiry keeps up with ingest.
		for left := n; a.expireDue && left > 0; {
			left -= max(a.expire(), 1)
		}
	}
}

// expireChunk bounds the events (and keys) one Expire removes: each chunk
// is a transaction of its own, short enough not to hold ingest back.
const expireChunk = 1000

// expireEvery is how often the writer looks for expired events: a tenth of
// the window, between 10ms and a second.
func expireEvery(retain time.Duration) time.Duration {
	return min(max(retain/10, 10*time.Millisecond), time.Second)
}

// expire runs one chunk of expiry, notes in expireDue whether more is due,
// and returns how many events and keys left.
func (a *Aggregator) expire() int {
	now := a.now()
	q := ExpireQuery{PayloadsBefore: now.Add(-a.retain), Limit: expireChunk}
	if a.dedupFor > a.retain {
		q.KeysBefore = now.Add(-a.dedupFor)
	}
	res, err := a.expirer.Expire(a.ctx, q)
	if err != nil {
		a.expireDue = false // the next tick tries again
		if a.ctx.Err() == nil && now.Sub(a.expireLog) >= time.Minute {
			a.expireLog = now
			a.log.LogAttrs(context.Background(), slog.LevelError, "eventagg: expiring events failed; they stay until it succeeds",
				slog.Any("error", err))
		}
		return 0
	}
	a.expireDue = res.More
	return max(res.Events, res.Keys)
}

// written is a batch the store committed, or failed to, waiting to be
// answered once it is durable.
type written struct {
	reqs     []*request
	outcomes []Outcome
	wait     func() error // returns once the commit is durable; nil if err is set
	err      error
}

// commit writes the events of reqs in one transaction and hands the result
// to the acker. A call whose context has ended is answered at once and not
// written; with RejectConflicts, a call holding a conflict is refused and
// the others are written without it. It returns batch, the reusable buffer.
func (a *Aggregator) commit(reqs []*request, batch []Event) []Event {
	live := make([]*request, 0, len(reqs)) // the acker's, once sent
	for _, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.answer(reply{err: err}) // the caller has gone; write nothing for it
			continue
		}
		live = append(live, r)
	}
	for len(live) > 0 {
		if a.ctx.Err() != nil { // Shutdown gave up: write nothing more
			for _, r := range live {
				r.answer(reply{err: ErrClosed})
			}
			return batch
		}
		batch = batch[:0]
		for _, r := range live {
			batch = append(batch, r.events...)
		}
		w := written{reqs: live}
		a.durability.inflight.Add(1) // before the commit can be seen
		w.outcomes, w.wait, w.err = a.pipe.AppendAsync(a.ctx, batch, AppendOptions{RejectConflicts: a.reject, AcceptedAt: a.now()})
		clear(batch) // drop references to payloads
		if w.err != nil {
			a.durability.inflight.Add(-1) // nothing was committed
		} else {
			a.durability.committed(w.outcomes)
		}
		var ce *ConflictError
		if a.reject && errors.As(w.err, &ce) && ce.Index >= 0 && ce.Index < len(batch) {
			live = refuse(live, ce)
			continue
		}
		if w.err == nil && len(w.outcomes) != len(batch) {
			w.err = fmt.Errorf("Append returned %d outcomes for %d events", len(w.outcomes), len(batch))
		}
		a.acks <- w
		return batch
	}
	return batch
}

// refuse answers the request of live that holds the event ce names with the
// conflict, its index made relative to the request, and returns the others.
func refuse(live []*request, ce *ConflictError) []*request {
	off := 0
	for i, r := range live {
		if ce.Index < off+len(r.events) {
			r.answer(reply{err: &ConflictError{Index: ce.Index - off, Key: ce.Key}})
			return slices.Delete(live, i, i+1)
		}
		off += len(r.events)
	}
	return live
}

// ack is the acker goroutine: it waits, in commit order, for each written
// batch to be durable, then answers its callers.
func (a *Aggregator) ack() {
	defer close(a.stopped)
	for w := range a.acks {
		if w.err == nil {
			if w.err = w.wait(); w.err == nil {
				a.durability.madeDurable(w.outcomes)
				a.wakeup.wake()
			}
			// A failed wait leaves the commit in flight for good: its
			// events, and every later one, are never known durable, and
			// no Tail hands them out.
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
		if ok, held := a.failLog.Allow(); ok { // an outage fails every commit: not a line each
			a.log.LogAttrs(ctx, slog.LevelError, "eventagg: append failed",
				slog.Int("events", events), slog.Int("calls", len(w.reqs)), slog.Any("error", w.err),
				slog.Int("failures_not_logged", held))
		}
		err := fmt.Errorf("%w: %w", ErrStore, w.err)
		for _, r := range w.reqs {
			r.answer(reply{err: err})
		}
		return
	}
	logDups := a.log.Enabled(ctx, slog.LevelDebug)
	off := 0
	for _, r := range w.reqs {
		res := Result{Outcomes: w.outcomes[off : off+len(r.events) : off+len(r.events)]}
		for i, o := range res.Outcomes {
			switch o.Status {
			case Stored:
				res.Processed++
				continue
			case Conflict:
				res.Conflicts++
			}
			res.Duplicates++
			if logDups {
				msg := "eventagg: duplicate dropped"
				if o.Status == Conflict {
					msg = "eventagg: conflict dropped: the payload differs from the stored copy's"
				}
				a.log.LogAttrs(ctx, slog.LevelDebug, msg,
					slog.String("topic", r.events[i].Topic), slog.String("event_id", r.events[i].EventID))
			}
		}
		off += len(r.events)
		r.answer(reply{res: res})
	}
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
	return a.addClaims(ctx, s)
}

// addClaims sets s's StartedAt, and its Claims if the store is a Claimer.
func (a *Aggregator) addClaims(ctx context.Context, s Stats) (Stats, error) {
	s.StartedAt = a.started
	if c, ok := a.store.(Claimer); ok {
		cc, err := c.ClaimCounts(ctx, a.now())
		if err != nil {
			return Stats{}, readError(ctx, err)
		}
		s.Claims = &cc
	}
	return s, nil
}

// QueryStats returns the store's totals, its number of topics, and the
// counters of the topics q selects, with StartedAt set. Unlike Stats, it
// holds no more than a page of topics in memory when the store implements
// [StatsQuerier], as this package's stores do.
func (a *Aggregator) QueryStats(ctx context.Context, q StatsQuery) (Stats, error) {
	s, err := queryStats(ctx, a.store, q)
	if err != nil {
		return Stats{}, readError(ctx, err)
	}
	return a.addClaims(ctx, s)
}

// StartedAt returns when the Aggregator was created.
func (a *Aggregator) StartedAt() time.Time { return a.started }

// Ping reports whether the Aggregator can serve requests: it returns
// [ErrClosed] after Shutdown, and otherwise asks the store, using [Pinger]
// when the store implements it and Stats when not.
func (a *Aggregator) Ping(ctx context.Context) error {
	if err := a.open(); err != nil {
		return err
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

// Shutdown stops accepting Publish calls (they return [ErrClosed]) and waits
// until every call already queued has been written and answered; then it
// returns nil. It does not close the store.
//
// If ctx ends first, Shutdown gives up: it cancels the context of the write
// under way (a store that heeds it returns, and its callers get ErrStore:
// their batch may or may not be stored), answers the calls not yet written
// with ErrClosed (nothing of them is stored), and returns ctx's error at
// once, even if the store never returns. Close the store only after a
// Shutdown that returned nil.
//
// Shutdown is safe to call more than once and from several goroutines.
func (a *Aggregator) Shutdown(ctx context.Context) error {
	a.once.Do(func() {
		a.mu.Lock()
		a.closed = true
		close(a.closing)
		a.mu.Unlock()
		a.senders.Wait() // they see closing and leave
		close(a.queue)
	})
	select {
	case <-a.stopped:
		a.cancel()
		return nil
	case <-ctx.Done():
	}
	if a.pending.Load() == 0 {
		// Every call is answered: the drain is done, though the writer
		// may not have seen the closed queue yet.
		a.cancel()
		return nil
	}
	a.cancel()
	for r := range a.queue { // the writer may be stuck in the store
		r.answer(reply{err: ErrClosed})
	}
	return ctx.Err()
}

// Close is Shutdown without a deadline: it returns once every queued call
// has been written and answered, however long the store takes.
func (a *Aggregator) Close() error { return a.Shutdown(context.Background()) }
