package eventagg

import (
	"context"
	"iter"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Following the stored events: a [Tail] reads pages of events after its
// cursor from the store, and when it has read everything it waits for the
// Aggregator's acker, which wakes every waiting Tail once a batch is durable.
// No events are queued per follower: one that falls behind reads from the
// store by cursor, so memory does not depend on how far behind it is.

// Bounds of a page that [Tail.Next] returns.
const (
	TailPage      = 256       // events
	TailPageBytes = 256 << 10 // payload bytes; a page holds at least one event
)

// WatchPoll is how often a waiting [Tail] reads the store anyway when the
// store is a [Watcher], whose wake-ups cross processes and may be lost (a
// dropped connection): a safety net, not the way new events normally arrive.
const WatchPoll = 2 * time.Second

// Watcher is implemented by stores that other processes append to as well,
// such as a PostgreSQL database shared by replicas. The Aggregator calls
// Watch once, when the first [Tail] waits, so that events stored by any
// replica wake its followers.
type Watcher interface {
	// Watch calls changed soon after any writer commits a transaction that
	// stored events (it may call it more often, never less, except while
	// its connection is down: then it calls changed once it is back, as
	// events may have been missed), until ctx ends; then it returns
	// ctx's error. Another error means it stopped watching; the
	// Aggregator logs it and calls Watch again after a pause.
	Watch(ctx context.Context, changed func()) error
}

// wakeup lets goroutines wait for the next event: wait returns a channel
// that the next wake closes. It costs nothing while no one waits.
type wakeup struct {
	mu sync.Mutex
	ch chan struct{}
}

func (w *wakeup) wait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *wakeup) wake() {
	w.mu.Lock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
	w.mu.Unlock()
}

// durability tells a Tail which of the events it reads are durable. A
// [Pipeliner] store makes a commit visible to readers before it is durable;
// a Tail must not hand such an event out, as a crash could still take it
// away (its Publish has not returned). Commits of this Aggregator number
// their events in commit order, and the acker makes them durable in that
// order, so a seq at most the last durable one is durable, and when no
// commit is under way, every event a read saw was durable.
type durability struct {
	guard    bool         // the store is a Pipeliner: visible may not mean durable
	inflight atomic.Int64 // commits begun and not yet known durable
	seq      atomic.Int64 // every event with a Seq up to this is durable; -1: none known yet
}

// durable reports whether the event numbered seq, just read, is durable.
func (d *durability) durable(seq int64) bool {
	if !d.guard || d.inflight.Load() == 0 {
		return true
	}
	s := d.seq.Load()
	return s >= 0 && seq <= s
}

// committed notes the Seqs of a commit, made visible and not durable yet:
// the first commit of this Aggregator tells that every event before it is
// durable (it was stored before this Aggregator started).
func (d *durability) committed(outcomes []Outcome) {
	if d.seq.Load() >= 0 {
		return
	}
	for _, o := range outcomes {
		if o.Status == Stored {
			d.seq.CompareAndSwap(-1, o.Seq-1)
			return
		}
	}
}

// madeDurable notes that a commit (of outcomes) is durable.
func (d *durability) madeDurable(outcomes []Outcome) {
	// Stored outcomes carry increasing Seqs: the last one is the highest.
	top := int64(-1)
	for i := len(outcomes) - 1; i >= 0; i-- {
		if outcomes[i].Status == Stored {
			top = outcomes[i].Seq
			break
		}
	}
	for {
		s := d.seq.Load()
		if top <= s || d.seq.CompareAndSwap(s, top) {
			break
		}
	}
	d.inflight.Add(-1)
}

// Tail follows the stored events after a cursor, in acceptance order: each
// call to Next returns the next page of them, waiting for one to be stored
// if there is none yet. It hands out only durable events (whose Publish
// may have returned), exactly once each, and holds no more than a page in
// memory however far behind it is. Get one with [Aggregator.Tail]; use it
// from one goroutine at a time.
type Tail struct {
	a     *Aggregator
	topic string
	after int64
}

// Tail returns a Tail of the events of q.Topic (all topics if empty) stored
// after q.After; q.Limit is ignored. Events removed by retention before the
// Tail reached them are skipped: it goes on from the next stored one.
func (a *Aggregator) Tail(q Query) *Tail {
	return &Tail{a: a, topic: q.Topic, after: max(q.After, 0)}
}

// Cursor returns the Seq of the last event Next returned, or the Tail's
// q.After if none yet: a new Tail from Query{After: Cursor()} goes on where
// this one stopped.
func (t *Tail) Cursor() int64 { return t.after }

// Next appends to dst the durable events stored after the cursor, at most
// [TailPage] of them and about [TailPageBytes] of payload, and moves the
// cursor past them. If there are none, it waits until one is stored, ctx
// ends (it returns ctx's error; the cursor has not moved, so Next can be
// called again), or the Aggregator has shut down and every event it
// stored has been returned ([ErrClosed]; events that other writers of the
// store add later are left to a Tail of another Aggregator). An error of the store is
// wrapped in [ErrStore]; events appended to dst before it are valid, and
// the cursor is past them.
func (t *Tail) Next(ctx context.Context, dst []Event) ([]Event, error) {
	a := t.a
	var poll *time.Timer
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()
	for {
		woken := a.wakeup.wait() // before reading: no wake-up can fall between
		stopped := isDone(a.stopped)
		limit := int64(math.MaxInt64)
		if stopped {
			// Shut down: what is left to hand out is what this Aggregator
			// stored, not what other writers of the store add after it.
			limit = a.durability.seq.Load()
		}
		start := len(dst)
		var err error
		dst, err = t.read(ctx, dst, limit)
		if err != nil || len(dst) > start {
			return dst, err
		}
		if stopped {
			return dst, ErrClosed
		}
		var polled <-chan time.Time
		if a.watcher != nil {
			a.watchOnce.Do(func() { go a.watch() })
			if poll == nil {
				poll = time.NewTimer(WatchPoll)
			} else {
				poll.Reset(WatchPoll)
			}
			polled = poll.C
		}
		select {
		case <-woken:
		case <-a.stopped: // read once more: the last commits are durable
		case <-polled:
		case <-ctx.Done():
			return dst, ctx.Err()
		}
	}
}

// read appends to dst what Next returns, without waiting: events up to
// limit.
func (t *Tail) read(ctx context.Context, dst []Event, limit int64) ([]Event, error) {
	bytes := 0
	for e, err := range t.a.store.Events(ctx, Query{Topic: t.topic, After: t.after, Limit: TailPage}) {
		if err != nil {
			return dst, readError(ctx, err)
		}
		if e.Seq > limit {
			break
		}
		if !t.a.durability.durable(e.Seq) {
			break // the acker wakes the Tail once it is
		}
		dst = append(dst, e)
		t.after = e.Seq
		if bytes += len(e.Payload); bytes >= TailPageBytes {
			break
		}
	}
	return dst, nil
}

// Follow returns the events of q.Topic (all topics if empty) stored after
// q.After, then each new one as soon as it is durable, in acceptance order,
// until ctx ends (the sequence then ends, without an error), or q.Limit
// events if it is positive. It ends with [ErrClosed] once the Aggregator has
// shut down and every event it stored has been yielded, and with an error
// wrapping [ErrStore] if the store fails. It is a [Tail] read page by page:
// a consumer slower than ingest reads from the store and never makes the
// Aggregator hold more than a page for it. To resume later, keep the Seq of
// the last event seen and pass it as q.After.
func (a *Aggregator) Follow(ctx context.Context, q Query) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		t := a.Tail(q)
		left := q.Limit
		var page []Event
		for {
			var err error
			page, err = t.Next(ctx, page[:0])
			for _, e := range page {
				if !yield(e, nil) {
					return
				}
				if left--; left == 0 {
					return
				}
			}
			clear(page) // let payloads go
			if err != nil {
				if ctx.Err() == nil {
					yield(Event{}, err)
				}
				return
			}
		}
	}
}

// watch runs the store's Watch, waking every waiting Tail on each change,
// until the Aggregator's context ends.
func (a *Aggregator) watch() {
	for {
		err := a.watcher.Watch(a.ctx, a.wakeup.wake)
		if a.ctx.Err() != nil {
			return
		}
		a.log.LogAttrs(context.Background(), slog.LevelWarn, "eventagg: watching the store for new events failed; followers poll until it is back",
			slog.Any("error", err))
		select {
		case <-time.After(WatchPoll):
		case <-a.ctx.Done():
			return
		}
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
