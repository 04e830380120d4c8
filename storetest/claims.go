package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
)

// claimTests are the subtests of stores that implement eventagg.Claimer.
var claimTests = []struct {
	name string
	fn   func(*testing.T, Harness)
}{
	{"ClaimThenComplete", testClaimThenComplete},
	{"ClaimBusyWhileHeld", testClaimBusyWhileHeld},
	{"ClaimOfPublishedKeyIsDone", testClaimOfPublishedKeyIsDone},
	{"ConcurrentClaims", testConcurrentClaims},
	{"ClaimExpiryThenReclaim", testClaimExpiryThenReclaim},
	{"ClaimFencing", testClaimFencing},
	{"ClaimRelease", testClaimRelease},
	{"ClaimLapsedButUntakenCompletes", testClaimLapsedButUntakenCompletes},
	{"ClaimCounts", testClaimCounts},
	{"ClaimsSurviveReopen", testClaimsSurviveReopen},
}

// claimer opens a store and returns it as a Claimer, skipping the test if
// it is not one: claims are an optional capability.
func claimer(t *testing.T, h Harness) (eventagg.Store, eventagg.Claimer) {
	t.Helper()
	s := open(t, h)
	c, ok := s.(eventagg.Claimer)
	if !ok {
		t.Skipf("%T does not implement eventagg.Claimer", s)
	}
	return s, c
}

// claimTime is the clock of the claim tests: claims take it explicitly.
var claimTime = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func mustClaim(t *testing.T, c eventagg.Claimer, key eventagg.Key, lease time.Duration, now time.Time, want eventagg.ClaimStatus) eventagg.Claim {
	t.Helper()
	cl, err := c.Claim(t.Context(), key, lease, now)
	if err != nil {
		t.Fatalf("Claim(%v) error: %v", key, err)
	}
	if cl.Status != want || cl.Key != key {
		t.Fatalf("Claim(%v) = %+v, want status %v", key, cl, want)
	}
	switch want {
	case eventagg.Claimed:
		if cl.Token <= 0 || !cl.Expires.Equal(now.Add(lease)) {
			t.Fatalf("Claim(%v) = %+v, want a positive token and Expires %v", key, cl, now.Add(lease))
		}
	case eventagg.Busy:
		if !cl.Expires.After(now) {
			t.Fatalf("Claim(%v) = %+v: busy, but its Expires is not after now %v", key, cl, now)
		}
	}
	return cl
}

func mustComplete(t *testing.T, c eventagg.Claimer, cl eventagg.Claim, e eventagg.Event) eventagg.Outcome {
	t.Helper()
	o, err := c.Complete(t.Context(), cl, e, eventagg.AppendOptions{AcceptedAt: claimTime})
	if err != nil {
		t.Fatalf("Complete(%+v) error: %v", cl, err)
	}
	return o
}

func testClaimThenComplete(t *testing.T, h Harness) {
	s, c := claimer(t, h)
	e := ev("hooks", "1")
	cl := mustClaim(t, c, e.Key(), time.Minute, claimTime, eventagg.Claimed)
	// A claim is not an event: nothing is listed or counted yet.
	if n := len(list(t, s, eventagg.Query{})); n != 0 {
		t.Fatalf("%d events listed while the key is only claimed", n)
	}
	o := mustComplete(t, c, cl, e)
	if o.Status != eventagg.Stored || o.Seq <= 0 {
		t.Fatalf("Complete outcome = %+v, want Stored with a Seq", o)
	}
	diffEvents(t, "Events after Complete", []eventagg.Event{e}, list(t, s, eventagg.Query{}))
	diffStats(t, map[string]eventagg.Counts{"hooks": {Received: 1, UniqueProcessed: 1, Stored: 1}}, stats(t, s))
	// Done for a later delivery, and a duplicate for Append.
	mustClaim(t, c, e.Key(), time.Minute, claimTime.Add(time.Second), eventagg.Done)
	diffOutcomes(t, "Append of a completed key", "D", appendOK(t, s, []eventagg.Event{e}))
	// The claim ended with the completion.
	if _, err := c.Complete(t.Context(), cl, e, eventagg.AppendOptions{}); !errors.Is(err, eventagg.ErrClaimLost) {
		t.Errorf("a second Complete of one claim: error %v, want ErrClaimLost", err)
	}
}

func testClaimBusyWhileHeld(t *testing.T, h Harness) {
	_, c := claimer(t, h)
	key := eventagg.Key{Topic: "hooks", EventID: "1"}
	cl := mustClaim(t, c, key, time.Minute, claimTime, eventagg.Claimed)
	busy := mustClaim(t, c, key, time.Minute, claimTime.Add(30*time.Second), eventagg.Busy)
	if !busy.Expires.Equal(cl.Expires) || busy.Token != 0 {
		t.Errorf("Busy claim = %+v, want Expires %v (the holder's) and no token", busy, cl.Expires)
	}
	// Other keys are free.
	mustClaim(t, c, eventagg.Key{Topic: "hooks", EventID: "2"}, time.Minute, claimTime, eventagg.Claimed)
	mustClaim(t, c, eventagg.Key{Topic: "other", EventID: "1"}, time.Minute, claimTime, eventagg.Claimed)
}

func testClaimOfPublishedKeyIsDone(t *testing.T, h Harness) {
	s, c := claimer(t, h)
	appendOK(t, s, evs("hooks", "1"))
	mustClaim(t, c, eventagg.Key{Topic: "hooks", EventID: "1"}, time.Minute, claimTime, eventagg.Done)
}

func testConcurrentClaims(t *testing.T, h Harness) {
	_, c := claimer(t, h)
	key := eventagg.Key{Topic: "hooks", EventID: "1"}
	const workers = 16
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[eventagg.ClaimStatus]int{}
		claimed  eventagg.Claim
	)
	for range workers {
		wg.Go(func() {
			cl, err := c.Claim(t.Context(), key, time.Minute, claimTime)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			statuses[cl.Status]++
			if cl.Status == eventagg.Claimed {
				claimed = cl
			}
		})
	}
	wg.Wait()
	if statuses[eventagg.Claimed] != 1 || statuses[eventagg.Busy] != workers-1 {
		t.Fatalf("%d concurrent claims of one key: %v, want exactly one claimed and the others busy", workers, statuses)
	}
	mustComplete(t, c, claimed, ev("hooks", "1"))
}

func testClaimExpiryThenReclaim(t *testing.T, h Harness) {
	_, c := claimer(t, h)
	key := eventagg.Key{Topic: "hooks", EventID: "1"}
	first := mustClaim(t, c, key, time.Minute, claimTime, eventagg.Claimed)
	// At the lease's end the claim is no longer live.
	second := mustClaim(t, c, key, time.Minute, first.Expires, eventagg.Claimed)
	if second.Token <= first.Token {
		t.Errorf("reclaim token %d, want more than the lapsed claim's %d", second.Token, first.Token)
	}
	cc, err := c.ClaimCounts(t.Context(), first.Expires)
	if err != nil {
		t.Fatal(err)
	}
	if cc != (eventagg.ClaimCounts{Active: 1, Expired: 1}) {
		t.Errorf("ClaimCounts after a takeover = %+v, want 1 active, 1 expired", cc)
	}
}

func testClaimFencing(t *testing.T, h Harness) {
	s, c := claimer(t, h)
	e := ev("hooks", "1")
	stale := mustClaim(t, c, e.Key(), time.Minute, claimTime, eventagg.Claimed)
	fresh := mustClaim(t, c, e.Key(), time.Minute, claimTime.Add(2*time.Minute), eventagg.Claimed)
	if _, err := c.Complete(t.Context(), stale, e, eventagg.AppendOptions{}); !errors.Is(err, eventagg.ErrClaimLost) {
		t.Fatalf("Complete by the stale claimant: error %v, want ErrClaimLost", err)
	}
	if err := c.Release(t.Context(), stale); !errors.Is(err, eventagg.ErrClaimLost) {
		t.Fatalf("Release by the stale claimant: error %v, want ErrClaimLost", err)
	}
	if n := len(list(t, s, eventagg.Query{})); n != 0 {
		t.Fatalf("%d events stored after the stale claimant's Complete, want none", n)
	}
	diffStats(t, map[string]eventagg.Counts{}, stats(t, s))
	// The fresh claim is untouched by the stale one's attempts.
	mustClaim(t, c, e.Key(), time.Minute, claimTime.Add(2*time.Minute+time.Second), eventagg.Busy)
	if o := mustComplete(t, c, fresh, e); o.Status != eventagg.Stored {
		t.Fatalf("Complete by the fresh claimant = %+v, want Stored", o)
	}
}

func testClaimRelease(t *testing.T, h Harness) {
	s, c := claimer(t, h)
	key := eventagg.Key{Topic: "hooks", EventID: "1"}
	cl := mustClaim(t, c, key, time.Hour, claimTime, eventagg.Claimed)
	if err := c.Release(t.Context(), cl); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := c.Release(t.Context(), cl); !errors.Is(err, eventagg.ErrClaimLost) {
		t.Errorf("a second Release: error %v, want ErrClaimLost", err)
	}
	// Claimable at once, long before the lease would have ended.
	again := mustClaim(t, c, key, time.Hour, claimTime.Add(time.Second), eventagg.Claimed)
	if again.Token <= cl.Token {
		t.Errorf("token after release %d, want more than %d", again.Token, cl.Token)
	}
	diffStats(t, map[string]eventagg.Counts{}, stats(t, s))
	cc, err := c.ClaimCounts(t.Context(), claimTime.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if cc != (eventagg.ClaimCounts{Active: 1}) {
		t.Errorf("ClaimCounts = %+v, want 1 active (a released claim did not expire)", cc)
	}
}

func testClaimLapsedButUntakenCompletes(t *testing.T, h Harness) {
	s, c := claimer(t, h)
	e := ev("hooks", "1")
	cl := mustClaim(t, c, e.Key(), time.Millisecond, claimTime, eventagg.Claimed)
	// Its lease ran out long ago (the store's clock is past claimTime), but
	// no one took the key: the work was done once, and completes.
	if o := mustComplete(t, c, cl, e); o.Status != eventagg.Stored {
		t.Fatalf("Complete of a lapsed, untaken claim = %+v, want Stored", o)
	}
	diffEvents(t, "Events", []eventagg.Event{e}, list(t, s, eventagg.Query{}))
}

func testClaimCounts(t *testing.T, h Harness) {
	_, c := claimer(t, h)
	for _, id := range []string{"1", "2", "3"} {
		mustClaim(t, c, eventagg.Key{Topic: "hooks", EventID: id}, time.Minute, claimTime, eventagg.Claimed)
	}
	done := mustClaim(t, c, eventagg.Key{Topic: "hooks", EventID: "4"}, time.Minute, claimTime, eventagg.Claimed)
	mustComplete(t, c, done, ev("hooks", "4"))
	for _, tc := range []struct {
		at   time.Time
		want eventagg.ClaimCounts
	}{
		{claimTime.Add(time.Second), eventagg.ClaimCounts{Active: 3}},
		{claimTime.Add(time.Minute), eventagg.ClaimCounts{Expired: 3}},
	} {
		cc, err := c.ClaimCounts(t.Context(), tc.at)
		if err != nil {
			t.Fatal(err)
		}
		if cc != tc.want {
			t.Errorf("ClaimCounts at %v = %+v, want %+v", tc.at, cc, tc.want)
		}
	}
}

func testClaimsSurviveReopen(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("the store cannot reopen (Harness.Reopen is nil)")
	}
	s := h.Open(t)
	c, ok := s.(eventagg.Claimer)
	if !ok {
		s.Close()
		t.Skipf("%T does not implement eventagg.Claimer", s)
	}
	held := mustClaim(t, c, eventagg.Key{Topic: "hooks", EventID: "1"}, time.Hour, claimTime, eventagg.Claimed)
	done := mustClaim(t, c, eventagg.Key{Topic: "hooks", EventID: "2"}, time.Hour, claimTime, eventagg.Claimed)
	mustComplete(t, c, done, ev("hooks", "2"))

	s = h.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	c = s.(eventagg.Claimer)
	mustClaim(t, c, held.Key, time.Hour, claimTime.Add(time.Minute), eventagg.Busy)
	mustClaim(t, c, done.Key, time.Hour, claimTime.Add(time.Minute), eventagg.Done)
	// Tokens keep growing across the restart, and the held claim completes.
	other := mustClaim(t, c, eventagg.Key{Topic: "hooks", EventID: "3"}, time.Hour, claimTime, eventagg.Claimed)
	if other.Token <= done.Token {
		t.Errorf("token after reopen %d, want more than %d", other.Token, done.Token)
	}
	if o := mustComplete(t, c, held, ev("hooks", "1")); o.Status != eventagg.Stored {
		t.Fatalf("Complete after reopen = %+v, want Stored", o)
	}
}
