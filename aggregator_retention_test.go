package eventagg_test

import (
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eventagg/eventagg"
)

// TestRetentionExpiresEvents publishes under a one-minute window (fake
// time): a minute later the writer has removed the events, counted them as
// expired, and a copy of one is stored as new.
func TestRetentionExpiresEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		agg := MustNew(t, eventagg.NewMemoryStore(), &eventagg.Options{Retention: time.Minute})
		if _, err := agg.Publish(t.Context(), event("t", "1"), event("t", "2")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Second)
		if _, err := agg.Publish(t.Context(), event("t", "3")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(45 * time.Second) // the first two are past the window, the third is not
		synctest.Wait()
		st := mustStats(t, agg)
		if want := (eventagg.Counts{Received: 3, UniqueProcessed: 3, Stored: 1, Expired: 2}); st.Counts != want {
			t.Errorf("Stats() 75s after = %+v, want %+v", st.Counts, want)
		}
		res, err := agg.Publish(t.Context(), event("t", "1"), event("t", "3"))
		if err != nil {
			t.Fatal(err)
		}
		if got := summary(t, res); got != "1 stored, 1 dropped, 0 conflicts: SD" {
			t.Errorf("Publish after expiry = %s: the expired key should be new, the kept one a duplicate", got)
		}
	})
}

// TestDedupWindowKeepsKeys keeps keys for an hour while events stay a
// minute: a copy within the hour is a duplicate though its event left.
func TestDedupWindowKeepsKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		agg := MustNew(t, eventagg.NewMemoryStore(), &eventagg.Options{Retention: time.Minute, DedupWindow: time.Hour})
		if _, err := agg.Publish(t.Context(), event("t", "1")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		res, err := agg.Publish(t.Context(), event("t", "1"))
		if err != nil || res.Duplicates != 1 {
			t.Errorf("a copy after the event left, within the dedup window = %+v, %v; want a duplicate", res, err)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if res, err := agg.Publish(t.Context(), event("t", "1")); err != nil || res.Processed != 1 {
			t.Errorf("a copy after the dedup window = %+v, %v; want it stored", res, err)
		}
		st := mustStats(t, agg)
		if st.Stored != 1 || st.Expired != 1 || st.Received != 3 {
			t.Errorf("Stats() = %+v", st.Counts)
		}
	})
}

// TestRetentionKeepsUpUnderLoad publishes steadily for five windows (fake
// time, a batch every 10ms): what is stored stays near one window's worth.
func TestRetentionKeepsUpUnderLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		agg := MustNew(t, eventagg.NewMemoryStore(), &eventagg.Options{Retention: time.Second})
		n := 0
		var batch []eventagg.Event
		for step := range 500 { // 10ms apart: 100 batches per window
			batch = batch[:0]
			for range 20 {
				batch = append(batch, event("t", "e-"+strconv.Itoa(n)))
				n++
			}
			if _, err := agg.Publish(t.Context(), batch...); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
			if step > 150 {
				st := mustStats(t, agg)
				if st.Stored > 2*100*20 {
					t.Fatalf("after %d batches %d events are stored: expiry does not keep up with one window of 2000", step, st.Stored)
				}
			}
		}
		st := mustStats(t, agg)
		if st.UniqueProcessed != st.Stored+st.Expired || st.Expired < int64(n)/2 {
			t.Errorf("Stats() after five windows = %+v", st.Counts)
		}
	})
}

func TestRetentionNeedsAnExpirer(t *testing.T) {
	if _, err := eventagg.New(faultyStore{eventagg.NewMemoryStore(), nil}, &eventagg.Options{Retention: time.Hour}); err == nil || !strings.Contains(err.Error(), "Expirer") {
		t.Errorf("New with Retention on a store without Expire = %v, want an error naming Expirer", err)
	}
	for _, o := range []eventagg.Options{
		{Retention: -time.Second},
		{Retention: time.Hour, DedupWindow: time.Minute},
		{DedupWindow: time.Hour},
	} {
		if _, err := eventagg.New(eventagg.NewMemoryStore(), &o); err == nil {
			t.Errorf("New(%+v) = nil error", o)
		}
	}
}
