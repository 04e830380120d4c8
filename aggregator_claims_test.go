package eventagg_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
)

func TestOnceRunsTheWorkOnce(t *testing.T) {
	t.Parallel()
	for name, open := range bothStores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			agg := MustNew(t, open(t), nil)
			e := event("hooks", "d-1")
			runs := 0
			work := func(context.Context) error { runs++; return nil }
			c, err := agg.Once(t.Context(), e, time.Minute, work)
			if err != nil || c.Status != eventagg.Claimed {
				t.Fatalf("first Once = %+v, %v; want Claimed", c, err)
			}
			c, err = agg.Once(t.Context(), e, time.Minute, work)
			if err != nil || c.Status != eventagg.Done {
				t.Fatalf("second Once = %+v, %v; want Done", c, err)
			}
			if runs != 1 {
				t.Fatalf("the work ran %d times, want once", runs)
			}
			// The completion is a published event, counted as one.
			st := mustStats(t, agg)
			if st.Counts != (eventagg.Counts{Received: 1, UniqueProcessed: 1, Stored: 1}) {
				t.Errorf("counters after Once = %+v", st.Counts)
			}
			if st.Claims == nil || *st.Claims != (eventagg.ClaimCounts{}) {
				t.Errorf("Stats().Claims = %v, want zero counts", st.Claims)
			}
			if res := mustPublish(t, agg, e); res.Duplicates != 1 {
				t.Errorf("Publish of a completed key = %+v, want a duplicate", res)
			}
		})
	}
}

func TestOnceReleasesOnFailure(t *testing.T) {
	t.Parallel()
	agg := MustNew(t, eventagg.NewMemoryStore(), nil)
	e := event("hooks", "d-1")
	boom := errors.New("downstream is down")
	c, err := agg.Once(t.Context(), e, time.Hour, func(context.Context) error { return boom })
	if !errors.Is(err, boom) || c.Status != eventagg.Claimed {
		t.Fatalf("failing Once = %+v, %v; want Claimed and the work's error", c, err)
	}
	// Released: the next delivery runs the work at once, not after an hour.
	ran := false
	if c, err := agg.Once(t.Context(), e, time.Hour, func(context.Context) error { ran = true; return nil }); err != nil || c.Status != eventagg.Claimed || !ran {
		t.Fatalf("Once after a failure = %+v, %v, ran %v; want the work to run", c, err, ran)
	}
	if st := mustStats(t, agg); st.UniqueProcessed != 1 || st.Received != 1 {
		t.Errorf("counters = %+v: the failed attempt must count nothing", st.Counts)
	}
}

func TestOnceBusyWhileAnotherWorks(t *testing.T) {
	t.Parallel()
	agg := MustNew(t, eventagg.NewMemoryStore(), nil)
	e := event("hooks", "d-1")
	working, finish := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := agg.Once(context.Background(), e, time.Hour, func(context.Context) error {
			close(working)
			<-finish
			return nil
		})
		done <- err
	}()
	<-working
	c, err := agg.Once(t.Context(), e, time.Hour, func(context.Context) error {
		t.Error("the work ran while another worker held the claim")
		return nil
	})
	if err != nil || c.Status != eventagg.Busy || time.Until(c.Expires) < 59*time.Minute {
		t.Fatalf("Once while another works = %+v, %v; want Busy until the holder's lease ends", c, err)
	}
	if st := mustStats(t, agg); st.Claims == nil || st.Claims.Active != 1 {
		t.Errorf("Stats().Claims = %v while one works, want 1 active", st.Claims)
	}
	close(finish)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestOnceWorkContextEndsWithTheLease(t *testing.T) {
	t.Parallel()
	agg := MustNew(t, eventagg.NewMemoryStore(), nil)
	var deadline time.Time
	c, err := agg.Once(t.Context(), event("hooks", "d-1"), time.Minute, func(ctx context.Context) error {
		deadline, _ = ctx.Deadline()
		return nil
	})
	if err != nil || !deadline.Equal(c.Expires) {
		t.Fatalf("the work's deadline %v, want the lease's end %v (err %v)", deadline, c.Expires, err)
	}
}

func TestOnceRefusesInvalidEventsBeforeTheWork(t *testing.T) {
	t.Parallel()
	agg := MustNew(t, eventagg.NewMemoryStore(), nil)
	bad := event("hooks", "d-1")
	bad.Payload = []byte(`{"a":1,"a":2}`)
	_, err := agg.Once(t.Context(), bad, time.Minute, func(context.Context) error {
		t.Error("the work ran for an invalid event")
		return nil
	})
	if !errors.Is(err, eventagg.ErrInvalidEvent) {
		t.Fatalf("Once(invalid) error = %v, want ErrInvalidEvent", err)
	}
}

func TestCompleteFencesAStaleClaimant(t *testing.T) {
	t.Parallel()
	now := t0
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	agg := MustNew(t, MustOpenSQLite(t, filepath.Join(t.TempDir(), "events.db"), nil), &eventagg.Options{Now: clock})
	e := event("hooks", "d-1")
	stale, err := agg.Claim(t.Context(), e.Key(), time.Minute)
	if err != nil || stale.Status != eventagg.Claimed {
		t.Fatalf("Claim = %+v, %v", stale, err)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	fresh, err := agg.Claim(t.Context(), e.Key(), time.Minute)
	if err != nil || fresh.Status != eventagg.Claimed {
		t.Fatalf("Claim after the lease = %+v, %v", fresh, err)
	}
	if _, err := agg.Complete(t.Context(), stale, e); !errors.Is(err, eventagg.ErrClaimLost) {
		t.Fatalf("stale Complete error = %v, want ErrClaimLost", err)
	}
	if o, err := agg.Complete(t.Context(), fresh, e); err != nil || o.Status != eventagg.Stored {
		t.Fatalf("fresh Complete = %+v, %v; want Stored", o, err)
	}
	st := mustStats(t, agg)
	if st.UniqueProcessed != 1 || st.Claims == nil || *st.Claims != (eventagg.ClaimCounts{Expired: 1}) {
		t.Errorf("Stats = %+v, claims %v; want 1 event, 1 expired claim", st.Counts, st.Claims)
	}
}

func TestFollowSeesCompletions(t *testing.T) {
	t.Parallel()
	agg := MustNew(t, MustOpenSQLite(t, filepath.Join(t.TempDir(), "events.db"), nil), nil)
	p := pull(t, agg.Follow(t.Context(), eventagg.Query{Topic: "hooks"}))
	if _, err := agg.Once(t.Context(), event("hooks", "d-1"), time.Minute, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := p.take(t, 1); ids(got) != "hooks/d-1@1 " {
		t.Fatalf("Follow after a completion = %s", ids(got))
	}
}

func TestClaimsNeedAClaimer(t *testing.T) {
	t.Parallel()
	agg := MustNew(t, struct{ eventagg.Store }{eventagg.NewMemoryStore()}, nil)
	if _, err := agg.Claim(t.Context(), eventagg.Key{Topic: "a", EventID: "1"}, time.Minute); !errors.Is(err, eventagg.ErrNoClaims) {
		t.Fatalf("Claim on a store without claims: %v, want ErrNoClaims", err)
	}
	if st := mustStats(t, agg); st.Claims != nil {
		t.Errorf("Stats().Claims = %v on a store without claims, want nil", st.Claims)
	}
}

// ExampleAggregator_Once processes a delivery once: the redelivery is
// acknowledged without running the work again.
func ExampleAggregator_Once() {
	agg, _ := eventagg.New(eventagg.NewMemoryStore(), nil)
	defer agg.Close()
	delivery := eventagg.Event{Topic: "webhooks", EventID: "d-1", Payload: []byte(`{"order":42}`)}
	for range 2 { // the sender delivers twice
		c, err := agg.Once(context.Background(), delivery, 30*time.Second, func(ctx context.Context) error {
			fmt.Println("processing", string(delivery.Payload))
			return nil // on error: released, and the next delivery runs it again
		})
		fmt.Println(c.Status, err)
	}
	// Output:
	// processing {"order":42}
	// claimed <nil>
	// done <nil>
}

// failingCompletes is a MemoryStore whose completions fail, as a store
// whose connection broke would.
type failingCompletes struct{ *eventagg.MemoryStore }

func (failingCompletes) Complete(context.Context, eventagg.Claim, eventagg.Event, eventagg.AppendOptions) (eventagg.Outcome, error) {
	return eventagg.Outcome{}, errors.New("connection reset")
}

func TestOnceReleasesWhenTheCompletionFails(t *testing.T) {
	t.Parallel()
	store := failingCompletes{eventagg.NewMemoryStore()}
	agg := MustNew(t, store, nil)
	e := event("hooks", "d-1")
	c, err := agg.Once(t.Context(), e, time.Hour, func(context.Context) error { return nil })
	if !errors.Is(err, eventagg.ErrStore) || c.Status != eventagg.Claimed {
		t.Fatalf("Once with a failing completion = %+v, %v; want Claimed and ErrStore", c, err)
	}
	// Released: claimable at once, not after the hour's lease.
	again, err := store.Claim(t.Context(), e.Key(), time.Hour, time.Now())
	if err != nil || again.Status != eventagg.Claimed {
		t.Fatalf("Claim after the failed completion = %+v, %v; want Claimed", again, err)
	}
}

func TestClaimRefusesBadKeysAndLeases(t *testing.T) {
	t.Parallel()
	agg := MustNew(t, eventagg.NewMemoryStore(), nil)
	ok := eventagg.Key{Topic: "hooks", EventID: "d-1"}
	for _, c := range []struct {
		name  string
		key   eventagg.Key
		lease time.Duration
	}{
		{"no topic", eventagg.Key{EventID: "d-1"}, time.Minute},
		{"blank event_id", eventagg.Key{Topic: "hooks", EventID: "  "}, time.Minute},
		{"event_id over 255 bytes", eventagg.Key{Topic: "hooks", EventID: string(make([]byte, 256))}, time.Minute},
		{"zero lease", ok, 0},
		{"negative lease", ok, -time.Second},
		// Would end past the nanosecond range: wrapped round, it would lapse at once.
		{"lease of 250 years", ok, 250 * 365 * 24 * time.Hour},
		{"the longest Duration", ok, time.Duration(1<<63 - 1)},
	} {
		if cl, err := agg.Claim(t.Context(), c.key, c.lease); err == nil {
			t.Errorf("Claim with %s = %+v, want an error", c.name, cl)
		}
	}
	if cl, err := agg.Claim(t.Context(), ok, 50*365*24*time.Hour); err != nil || cl.Status != eventagg.Claimed {
		t.Errorf("Claim with a 50-year lease = %+v, %v; want Claimed", cl, err)
	}
}
