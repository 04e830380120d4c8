package eventagg_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eventagg/eventagg"
)

// stuckStore never returns from Append until release is closed, whatever
// its context says: a store hung on a dead disk or network.
type stuckStore struct {
	eventagg.Store
	entered chan struct{} // receives when an Append starts
	release chan struct{}
}

func (s *stuckStore) Append(ctx context.Context, events []eventagg.Event, opts eventagg.AppendOptions) ([]eventagg.Outcome, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.Store.Append(ctx, events, opts)
}

// TestShutdownGivesUpOnAStuckStore shuts down with a deadline while the
// store's Append never returns: Shutdown returns the deadline's error on
// time, and the calls still queued are answered ErrClosed at once.
func TestShutdownGivesUpOnAStuckStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &stuckStore{Store: eventagg.NewMemoryStore(), entered: make(chan struct{}), release: make(chan struct{})}
		defer close(store.release) // let the writer go at the end, so the bubble can end
		agg, err := eventagg.New(store, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		inFlight := publishAsync(ctx, agg, event("t", "1"))
		<-store.entered
		queued := publishAsync(ctx, agg, event("t", "2"))
		synctest.Wait()

		start := time.Now()
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := agg.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown with a stuck store = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d != 5*time.Second {
			t.Errorf("Shutdown returned after %v, want the 5s deadline", d)
		}
		if o := <-queued; !errors.Is(o.err, eventagg.ErrClosed) {
			t.Errorf("a call queued behind the stuck write = %+v, %v; want ErrClosed", o.res, o.err)
		}
		select {
		case o := <-inFlight:
			t.Errorf("the call stuck in the store was answered (%v) before the store returned", o.err)
		default:
		}
		if _, err := agg.Publish(ctx, event("t", "3")); !errors.Is(err, eventagg.ErrClosed) {
			t.Errorf("Publish after Shutdown = %v, want ErrClosed", err)
		}
	})
}

// ctxStore's Append waits until its context ends, then returns its error:
// a store that heeds its context.
type ctxStore struct {
	eventagg.Store
	entered chan struct{}
}

func (s *ctxStore) Append(ctx context.Context, _ []eventagg.Event, _ eventagg.AppendOptions) ([]eventagg.Outcome, error) {
	s.entered <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestShutdownCancelsTheWrite shuts down with a deadline while a store that
// heeds its context is writing: the write is cancelled, its caller gets
// ErrStore, and Shutdown returns the deadline's error.
func TestShutdownCancelsTheWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &ctxStore{Store: eventagg.NewMemoryStore(), entered: make(chan struct{})}
		agg, err := eventagg.New(store, nil)
		if err != nil {
			t.Fatal(err)
		}
		inFlight := publishAsync(t.Context(), agg, event("t", "1"))
		<-store.entered
		sctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if err := agg.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
		}
		if o := <-inFlight; !errors.Is(o.err, eventagg.ErrStore) || !errors.Is(o.err, context.Canceled) {
			t.Errorf("the cancelled write's caller = %v, want ErrStore wrapping context.Canceled", o.err)
		}
	})
}

// TestShutdownDrains: without a deadline Shutdown returns nil once every
// queued call is written, and answers them all.
func TestShutdownDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newGateStore()
		agg := MustNew(t, store, nil)
		first := publishAsync(t.Context(), agg, event("t", "1"))
		synctest.Wait()
		second := publishAsync(t.Context(), agg, event("t", "2"))
		synctest.Wait()
		done := make(chan error, 1)
		go func() { done <- agg.Shutdown(t.Context()) }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v with calls still queued", err)
		default:
		}
		close(store.gate)
		if err := <-done; err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
		for _, ch := range []<-chan outcome{first, second} {
			if o := <-ch; o.err != nil || o.res.Processed != 1 {
				t.Errorf("a drained call = %+v, %v; want it stored", o.res, o.err)
			}
		}
	})
}

// TestRejectConflictsRefusesOnlyTheCall merges three calls into one commit,
// the middle one holding a conflict: it alone is refused, with its own
// index, and the others are stored.
func TestRejectConflictsRefusesOnlyTheCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newGateStore()
		agg := MustNew(t, store, &eventagg.Options{RejectConflicts: true})
		ctx := t.Context()
		stored := event("t", "k")
		close(store.gate)
		if _, err := agg.Publish(ctx, stored); err != nil {
			t.Fatal(err)
		}
		store.gate = make(chan struct{})
		hold := publishAsync(ctx, agg, event("t", "hold"))
		synctest.Wait()
		changed := stored
		changed.Payload = []byte(`"changed"`)
		a := publishAsync(ctx, agg, event("t", "a"))
		synctest.Wait()
		b := publishAsync(ctx, agg, event("t", "b"), stored, changed)
		synctest.Wait()
		c := publishAsync(ctx, agg, event("t", "c"), stored)
		synctest.Wait()
		close(store.gate)
		<-hold
		var ce *eventagg.ConflictError
		if o := <-b; !errors.As(o.err, &ce) || ce.Index != 2 || ce.Key != stored.Key() {
			t.Errorf("the call with a conflict = %+v, %v; want a ConflictError at its index 2", o.res, o.err)
		}
		for name, ch := range map[string]<-chan outcome{"a": a, "c": c} {
			if o := <-ch; o.err != nil || o.res.Processed != 1 {
				t.Errorf("call %s merged with the conflict = %+v, %v; want it stored", name, o.res, o.err)
			}
		}
		st := mustStats(t, agg)
		if want := (eventagg.Counts{Received: 5, UniqueProcessed: 4, DuplicateDropped: 1, Stored: 4}); st.Counts != want {
			t.Errorf("Stats() = %+v, want %+v: nothing of the refused call counted", st.Counts, want)
		}
	})
}

// TestShutdownWithNothingQueued: with every call answered, Shutdown returns
// nil even when its context has already ended.
func TestShutdownWithNothingQueued(t *testing.T) {
	for range 50 {
		agg, err := eventagg.New(eventagg.NewMemoryStore(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := agg.Publish(t.Context(), event("t", "1")); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := agg.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown(ended ctx) with nothing queued = %v, want nil", err)
		}
	}
}
