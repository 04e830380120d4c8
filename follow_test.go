package eventagg_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
)

// bothStores are the in-process stores Follow and claims are tested on.
func bothStores(t *testing.T) map[string]func(t *testing.T) eventagg.Store {
	return map[string]func(t *testing.T) eventagg.Store{
		"memory": func(t *testing.T) eventagg.Store { return eventagg.NewMemoryStore() },
		"sqlite": func(t *testing.T) eventagg.Store {
			return MustOpenSQLite(t, filepath.Join(t.TempDir(), "events.db"), nil)
		},
	}
}

// puller reads a Follow sequence from another goroutine, so that a test can
// wait for its next event with a deadline.
type puller struct {
	next func() (eventagg.Event, error, bool)
	stop func()
}

func pull(t *testing.T, seq iter.Seq2[eventagg.Event, error]) *puller {
	next, stop := iter.Pull2(seq)
	t.Cleanup(stop)
	return &puller{next: next, stop: stop}
}

// take returns the next n events, failing the test on an error or an end.
func (p *puller) take(t *testing.T, n int) []eventagg.Event {
	t.Helper()
	var out []eventagg.Event
	for range n {
		e, err, ok := p.next()
		if !ok || err != nil {
			t.Fatalf("Follow ended after %d of %d events: ok=%v err=%v", len(out), n, ok, err)
		}
		out = append(out, e)
	}
	return out
}

func ids(events []eventagg.Event) string {
	s := ""
	for _, e := range events {
		s += fmt.Sprintf("%s/%s@%d ", e.Topic, e.EventID, e.Seq)
	}
	return s
}

func mustPublish(t *testing.T, agg *eventagg.Aggregator, events ...eventagg.Event) eventagg.Result {
	t.Helper()
	res, err := agg.Publish(t.Context(), events...)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return res
}

func TestFollowSeesStoredThenNewEvents(t *testing.T) {
	t.Parallel()
	for name, open := range bothStores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			agg := MustNew(t, open(t), nil)
			mustPublish(t, agg, event("a", "1"), event("b", "2"), event("a", "1"))
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			p := pull(t, agg.Follow(ctx, eventagg.Query{}))
			got := p.take(t, 2)
			if ids(got) != "a/1@1 b/2@2 " {
				t.Fatalf("stored events = %s, want a/1@1 b/2@2", ids(got))
			}
			// Published after the follower read everything: each comes once,
			// duplicates never.
			for i := 3; i <= 5; i++ {
				mustPublish(t, agg, event("c", strconv.Itoa(i)), event("a", "1"))
			}
			got = p.take(t, 3)
			if ids(got) != "c/3@3 c/4@4 c/5@5 " {
				t.Fatalf("new events = %s, want c/3@3 c/4@4 c/5@5", ids(got))
			}
			if string(got[0].Payload) != `{"id":"3"}` || !got[0].Timestamp.Equal(t0) {
				t.Errorf("followed event = %+v, want the published one", got[0])
			}
		})
	}
}

func TestFollowTopicAndResume(t *testing.T) {
	t.Parallel()
	for name, open := range bothStores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			agg := MustNew(t, open(t), nil)
			for i := range 6 {
				mustPublish(t, agg, event([]string{"a", "b"}[i%2], strconv.Itoa(i)))
			}
			var seen []eventagg.Event
			for e, err := range agg.Follow(t.Context(), eventagg.Query{Topic: "a", Limit: 2}) {
				if err != nil {
					t.Fatal(err)
				}
				seen = append(seen, e)
			}
			if ids(seen) != "a/0@1 a/2@3 " {
				t.Fatalf("Follow(topic a, limit 2) = %s", ids(seen))
			}
			// Resume after the last one seen: the rest, then a new one.
			p := pull(t, agg.Follow(t.Context(), eventagg.Query{Topic: "a", After: seen[1].Seq}))
			if got := p.take(t, 1); ids(got) != "a/4@5 " {
				t.Fatalf("resumed Follow = %s, want a/4@5", ids(got))
			}
			mustPublish(t, agg, event("b", "x"), event("a", "y"))
			if got := p.take(t, 1); ids(got) != "a/y@8 " {
				t.Fatalf("resumed Follow, new = %s, want a/y@8", ids(got))
			}
		})
	}
}

func TestFollowManyFollowersUnderConcurrentPublishes(t *testing.T) {
	t.Parallel()
	for name, open := range bothStores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			agg := MustNew(t, open(t), nil)
			const followers, publishers, per = 8, 4, 50
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, followers)
			started := make(chan struct{}, followers)
			for range followers {
				wg.Go(func() {
					seen := make(map[string]bool)
					last := int64(0)
					first := true
					for e, err := range agg.Follow(ctx, eventagg.Query{}) {
						if first {
							started <- struct{}{}
							first = false
						}
						if err != nil {
							errs <- err
							return
						}
						if e.Seq <= last || seen[e.EventID] {
							errs <- fmt.Errorf("event %s (seq %d) after seq %d: out of order or twice", e.EventID, e.Seq, last)
							return
						}
						last, seen[e.EventID] = e.Seq, true
						if len(seen) == publishers*per+1 {
							errs <- nil
							return
						}
					}
					errs <- fmt.Errorf("Follow ended after %d events", len(seen))
				})
			}
			mustPublish(t, agg, event("start", "start"))
			for range followers {
				<-started
			}
			var pw sync.WaitGroup
			for p := range publishers {
				pw.Go(func() {
					for i := range per {
						id := fmt.Sprintf("%d-%d", p, i)
						if _, err := agg.Publish(ctx, event("t", id), event("t", id)); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			pw.Wait()
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func TestFollowEndsWithErrClosedAfterShutdown(t *testing.T) {
	t.Parallel()
	agg, err := eventagg.New(eventagg.NewMemoryStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mustPublish(t, agg, event("a", "1"))
	p := pull(t, agg.Follow(t.Context(), eventagg.Query{}))
	p.take(t, 1)
	mustPublish(t, agg, event("a", "2"))
	done := make(chan error, 1)
	go func() { done <- agg.Shutdown(t.Context()) }()
	// The event stored before the shutdown comes, then the end.
	if got := p.take(t, 1); ids(got) != "a/2@2 " {
		t.Fatalf("after Shutdown began, Follow = %s, want a/2@2", ids(got))
	}
	if _, err, ok := p.next(); !ok || !errors.Is(err, eventagg.ErrClosed) {
		t.Fatalf("Follow's end after Shutdown = (%v, ok %v), want ErrClosed", err, ok)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestFollowEndsWhenContextEnds(t *testing.T) {
	t.Parallel()
	agg := MustNew(t, eventagg.NewMemoryStore(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	p := pull(t, agg.Follow(ctx, eventagg.Query{}))
	mustPublish(t, agg, event("a", "1"))
	p.take(t, 1)
	cancel()
	if e, err, ok := p.next(); ok {
		t.Fatalf("Follow after its context ended yielded (%v, %v), want its end", e, err)
	}
}

// heldStore is a Pipeliner whose commits are visible at once and durable
// only when the test releases them: Tail must not hand out an event before.
type heldStore struct {
	*eventagg.MemoryStore
	committed chan struct{} // a send per commit, once it is visible
	release   chan struct{} // a receive per commit, to make it durable
}

func (s *heldStore) AppendAsync(ctx context.Context, events []eventagg.Event, opts eventagg.AppendOptions) ([]eventagg.Outcome, func() error, error) {
	out, err := s.Append(ctx, events, opts)
	if err != nil {
		return nil, nil, err
	}
	s.committed <- struct{}{}
	return out, func() error { <-s.release; return nil }, nil
}

func (s *heldStore) Busy() <-chan struct{} { return nil }

func TestTailHandsOutOnlyDurableEvents(t *testing.T) {
	t.Parallel()
	store := &heldStore{MemoryStore: eventagg.NewMemoryStore(), committed: make(chan struct{}, 10), release: make(chan struct{}, 10)}
	store.release <- struct{}{}
	agg := MustNew(t, store, nil)
	mustPublish(t, agg, event("a", "1")) // durable: released beforehand

	tail := agg.Tail(eventagg.Query{})
	page, err := tail.Next(t.Context(), nil)
	if err != nil || ids(page) != "a/1@1 " {
		t.Fatalf("Next() = %s, %v; want a/1@1", ids(page), err)
	}
	published := make(chan error, 1)
	go func() {
		_, err := agg.Publish(context.Background(), event("a", "2"))
		published <- err
	}()
	// Once the commit is visible in the store, the Tail must still not
	// see it, as it is not durable.
	<-store.committed
	<-store.committed
	n := 0
	for range store.Events(t.Context(), eventagg.Query{After: 1}) {
		n++
	}
	if n != 1 {
		t.Fatalf("the second commit is not visible in the store (%d events after seq 1)", n)
	}
	short, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	page, err = tail.Next(short, page[:0])
	cancel()
	if len(page) != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next() before the commit was durable = %s, %v; want nothing and the deadline", ids(page), err)
	}
	if tail.Cursor() != 1 {
		t.Fatalf("Cursor() = %d after a Next that returned nothing, want 1", tail.Cursor())
	}
	store.release <- struct{}{}
	page, err = tail.Next(t.Context(), page[:0])
	if err != nil || ids(page) != "a/2@2 " {
		t.Fatalf("Next() once durable = %s, %v; want a/2@2", ids(page), err)
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
}

func TestTailPageBounds(t *testing.T) {
	t.Parallel()
	agg := MustNew(t, eventagg.NewMemoryStore(), nil)
	big := make([]byte, eventagg.TailPageBytes/3)
	for i := range big {
		big[i] = 'x'
	}
	payload := []byte(`"` + string(big) + `"`)
	var batch []eventagg.Event
	for i := range eventagg.TailPage + 10 {
		e := event("small", strconv.Itoa(i))
		batch = append(batch, e)
	}
	mustPublish(t, agg, batch...)
	for i := range 4 {
		e := event("big", strconv.Itoa(i))
		e.Payload = payload
		mustPublish(t, agg, e)
	}
	tail := agg.Tail(eventagg.Query{})
	var sizes []int
	var page []eventagg.Event
	for tail.Cursor() < int64(len(batch)+4) {
		var err error
		if page, err = tail.Next(t.Context(), page[:0]); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(page))
	}
	// A full page of small ones; the rest of them with the first three big
	// ones, which reach the bytes bound; the last big one.
	if fmt.Sprint(sizes) != fmt.Sprint([]int{eventagg.TailPage, 13, 1}) {
		t.Errorf("page sizes = %v, want [%d 13 1]", sizes, eventagg.TailPage)
	}
}

// ExampleAggregator_Follow follows the events of a topic: first those stored,
// then each new one as it is published.
func ExampleAggregator_Follow() {
	agg, _ := eventagg.New(eventagg.NewMemoryStore(), nil)
	defer agg.Close()
	ctx := context.Background()
	agg.Publish(ctx, eventagg.Event{Topic: "orders", EventID: "o-1"})

	go func() { // another producer, later
		agg.Publish(ctx, eventagg.Event{Topic: "orders", EventID: "o-2"}, eventagg.Event{Topic: "orders", EventID: "o-1"})
	}()
	for e, err := range agg.Follow(ctx, eventagg.Query{Topic: "orders", Limit: 2}) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(e.Seq, e.EventID) // resume later with Query{After: e.Seq}
	}
	// Output:
	// 1 o-1
	// 2 o-2
}

func TestTailOfAShutDownAggregatorEnds(t *testing.T) {
	t.Parallel()
	store := eventagg.NewMemoryStore()
	first, err := eventagg.New(store, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustPublish(t, first, event("a", "1"))
	tail := first.Tail(eventagg.Query{})
	if err := first.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Another Aggregator writes on: the first one's Tail hands out what the
	// first stored, then ends, rather than follow the other for ever.
	second := MustNew(t, store, nil)
	mustPublish(t, second, event("a", "2"))
	page, err := tail.Next(t.Context(), nil)
	if err != nil || ids(page) != "a/1@1 " {
		t.Fatalf("Next() after Shutdown = %s, %v; want a/1@1", ids(page), err)
	}
	if page, err = tail.Next(t.Context(), page[:0]); !errors.Is(err, eventagg.ErrClosed) || len(page) != 0 {
		t.Fatalf("Next() once the first's events are out = %s, %v; want ErrClosed", ids(page), err)
	}
}
