package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

// awaitExpired polls the server's /stats until n events have expired; the
// server gives no other sign that expiry ran.
func awaitExpired(t *testing.T, url string, n int64) httpapi.StatsResponse {
	t.Helper()
	client := newClient(t, url)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := client.Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.Expired >= n {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s %d events have expired, want %d: %+v", st.Expired, n, st.Counts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServerRetention runs the server with -retention 1s: events leave a
// second after they were stored, the counters say so, and a copy of an
// expired event is stored as new; with -dedup-window, a copy is still a
// duplicate after its event left.
func TestServerRetention(t *testing.T) {
	for _, tt := range []struct {
		name   string
		args   []string
		resent string // the answer to the resend of the expired events
	}{
		{"KeysLeaveWithEvents", []string{"-retention", "1s"}, `{"processed_count":10,"duplicate_dropped":0,"conflicts":0}`},
		{"DedupWindow", []string{"-retention", "1s", "-dedup-window", "1h"}, `{"processed_count":0,"duplicate_dropped":10,"conflicts":0}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := startChild(t, filepath.Join(t.TempDir(), "events.db"), tt.args...)
			batch := batchJSON("r", 10)
			if status, _, body := httpDo(t, "POST", c.url+"/publish", batch); status != 200 {
				t.Fatalf("publish = %d %s", status, body)
			}
			st := awaitExpired(t, c.url, 10)
			if want := (eventagg.Counts{Received: 10, UniqueProcessed: 10, Expired: 10}); st.Counts != want {
				t.Errorf("Stats after expiry = %+v, want %+v", st.Counts, want)
			}
			var events []eventagg.Event
			if status, _, body := httpDo(t, "GET", c.url+"/events", ""); status != 200 || json.Unmarshal([]byte(body), &events) != nil || len(events) != 0 {
				t.Errorf("GET /events after expiry = %d %s, want []", status, body)
			}
			if _, _, metrics := httpDo(t, "GET", c.url+"/metrics", ""); !strings.Contains(metrics, "eventagg_events_expired_total 10\n") || !strings.Contains(metrics, "eventagg_events_stored 0\n") {
				t.Errorf("/metrics lacks the expiry counters:\n%s", metrics)
			}
			if status, _, body := httpDo(t, "POST", c.url+"/publish", batch); status != 200 || strings.TrimSpace(body) != tt.resent {
				t.Errorf("resend of the expired events = %d %s, want %s", status, body, tt.resent)
			}
		})
	}
}

// TestCrashDuringExpiry SIGKILLs a server with -retention 1s while
// publishers run and expiry removes events, over several cycles on one
// database: after each restart the counters agree with each other and with
// the listing, no key is listed twice, and every event acknowledged as
// stored in the half second before the kill, still inside its window, is
// listed.
func TestCrashDuringExpiry(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 3))
	db := filepath.Join(t.TempDir(), "events.db")
	args := []string{"-retention", "1s"}
	for cycle := range 3 {
		c := startChild(t, db, args...)
		var (
			mu    sync.Mutex
			acked = map[eventagg.Key]time.Time{} // when each key was last acknowledged as stored
			stop  = make(chan struct{})
			wg    sync.WaitGroup
		)
		for p := range 4 {
			wg.Go(func() {
				client, err := httpapi.NewClient(c.url, &httpapi.ClientOptions{MaxAttempts: 1})
				if err != nil {
					t.Error(err)
					return
				}
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					batch := make([]eventagg.Event, 10)
					for j := range batch {
						// Some ids come back, past their window or not.
						batch[j] = eventagg.Event{Topic: "t", EventID: fmt.Sprintf("c%d-p%d-%d", cycle, p, (i*10+j)%300)}
					}
					res, err := client.Publish(context.Background(), batch...)
					if err != nil {
						return // the kill
					}
					now := time.Now()
					mu.Lock()
					for j, e := range batch {
						if res.Outcomes[j].Status == eventagg.Stored { // accepted now: its window starts
							acked[e.Key()] = now
						}
					}
					mu.Unlock()
				}
			})
		}
		time.Sleep(time.Duration(1000+rng.IntN(1500)) * time.Millisecond) // a random moment, past a window
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		c.wait()
		close(stop)
		wg.Wait()

		c = startChild(t, db, args...)
		client := newClient(t, c.url)
		listed := map[eventagg.Key]bool{}
		for e, err := range client.Events(t.Context(), eventagg.Query{}) {
			if err != nil {
				t.Fatal(err)
			}
			if listed[e.Key()] {
				t.Errorf("cycle %d: %v listed twice", cycle, e.Key())
			}
			listed[e.Key()] = true
		}
		st, err := client.Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.Received != st.UniqueProcessed+st.DuplicateDropped || st.UniqueProcessed != st.Stored+st.Expired {
			t.Errorf("cycle %d: counters %+v break received = unique + duplicates or unique = stored + expired", cycle, st.Counts)
		}
		// Expiry may have run since the restart: the listing is read after
		// the counters, and only ever shrinks.
		if int64(len(listed)) > st.Stored {
			t.Errorf("cycle %d: %d events listed, more than the %d stored", cycle, len(listed), st.Stored)
		}
		recent, missing := 0, 0
		for k, at := range acked {
			if killed.Sub(at) < 500*time.Millisecond {
				recent++
				if !listed[k] {
					missing++
				}
			}
		}
		if missing > 0 {
			t.Errorf("cycle %d: %d of %d events acknowledged in the half second before the kill are not listed", cycle, missing, recent)
		}
		t.Logf("cycle %d: %d keys acknowledged as stored, %d in the last half second, %d listed after restart; counters %+v", cycle, len(acked), recent, len(listed), st.Counts)
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.wait()
	}
	integrityCheck(t, db)
}
