package main

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/google/go-cmp/cmp"
	"github.com/ncruces/go-sqlite3"
)

// TestServerSurvivesStoreFaults runs the server as its own process and puts
// its database in a fault from this process: the disk fills up, or another
// process holds the write lock. Publishes get 503 with a JSON error and
// Retry-After, nothing is counted, the server keeps serving reads, and once
// the fault clears the same batch is stored. (Read-only databases and
// failing stores are covered by the library's TestPublishSurvivesStoreFaults.)
func TestServerSurvivesStoreFaults(t *testing.T) {
	tests := []struct {
		name         string
		args         []string
		fault, clear string // SQL run on a connection of this process
	}{
		{"DiskFull", []string{"-max-db-size", strconv.Itoa(256 << 10)},
			`CREATE TABLE filler (b BLOB); INSERT INTO filler VALUES (zeroblob(300 * 1024))`, `DROP TABLE filler`},
		{"LockedByAnotherProcess", []string{"-busy-timeout", "100ms"},
			`BEGIN EXCLUSIVE`, `ROLLBACK`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := filepath.Join(t.TempDir(), "events.db")
			c := startChild(t, db, tt.args...)
			client := newClient(t, c.url)
			ctx := t.Context()
			if _, err := client.Publish(ctx, eventagg.Event{Topic: "t", EventID: "before"}); err != nil {
				t.Fatal(err)
			}
			other, err := sqlite3.Open(db)
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			batch := `[{"topic":"t","event_id":"big","payload":"` + strings.Repeat("x", 64<<10) + `"},{"topic":"t","event_id":"before"}]`

			if err := other.Exec(tt.fault); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				status, header, body := httpDo(t, "POST", c.url+"/publish", batch)
				var e httpapi.ErrorResponse
				if status != 503 || header.Get("Retry-After") == "" || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, "store unavailable") {
					t.Fatalf("publish during the fault = %d %s; want 503 with Retry-After and a JSON error", status, body)
				}
			}
			if status, _, body := httpDo(t, "GET", c.url+"/health", ""); status != 200 {
				t.Errorf("GET /health during the fault = %d %s, want 200: the server is up and reads work", status, body)
			}
			if st, err := client.Stats(ctx); err != nil || st.Received != 1 {
				t.Errorf("during the fault Stats() = %+v, %v; want only the first event counted", st.Counts, err)
			}

			if err := other.Exec(tt.clear); err != nil {
				t.Fatal(err)
			}
			status, _, body := httpDo(t, "POST", c.url+"/publish", batch)
			if status != 200 || strings.TrimSpace(body) != `{"processed_count":1,"duplicate_dropped":1,"conflicts":0}` {
				t.Errorf("publish after the fault cleared = %d %s; want 1 stored, 1 duplicate", status, body)
			}
			st, err := client.Stats(ctx)
			if want := (eventagg.Counts{Received: 3, UniqueProcessed: 2, DuplicateDropped: 1, Stored: 2}); err != nil || st.Counts != want {
				t.Errorf("after recovery Stats() = %+v, %v; want %+v", st.Counts, err, want)
			}
			if !strings.Contains(c.logs.all.String(), `"msg":"store error"`) {
				t.Errorf("the store errors were not logged:\n%s", c.logs.all.String())
			}
		})
	}
}

// TestTwoServersShareOneDatabase runs two server processes on one SQLite
// file and publishes overlapping batches through both at once: every
// request succeeds, each key is stored once, and both servers report the
// same exact counters and listing.
func TestTwoServersShareOneDatabase(t *testing.T) {
	db := filepath.Join(t.TempDir(), "events.db")
	servers := []*child{startChild(t, db), startChild(t, db)}
	const publishers, rounds, ids = 6, 15, 40
	var (
		wg                    sync.WaitGroup
		mu                    sync.Mutex
		sent, processed, dups int64
		distinct              = map[eventagg.Key]bool{}
	)
	for p := range publishers {
		wg.Go(func() {
			for r := range rounds {
				// Publisher p alternates servers; its keys overlap the others'.
				c := newClient(t, servers[(p+r)%2].url)
				var batch []eventagg.Event
				for j := range 5 {
					id := strconv.Itoa((p*7 + r*3 + j*11) % ids)
					batch = append(batch, eventagg.Event{Topic: "shared-" + strconv.Itoa(j%2), EventID: id})
				}
				res, err := c.Publish(t.Context(), batch...)
				if err != nil {
					t.Errorf("publisher %d round %d: %v", p, r, err)
					return
				}
				mu.Lock()
				sent += int64(len(batch))
				processed += int64(res.Processed)
				dups += int64(res.Duplicates)
				for _, e := range batch {
					distinct[e.Key()] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	want := eventagg.Counts{Received: sent, UniqueProcessed: int64(len(distinct)), DuplicateDropped: sent - int64(len(distinct)), Stored: int64(len(distinct))}
	if processed != want.UniqueProcessed || dups != want.DuplicateDropped {
		t.Errorf("the answers sum to %d processed, %d duplicates; want %d, %d", processed, dups, want.UniqueProcessed, want.DuplicateDropped)
	}
	var listings [][]eventagg.Event
	for i, c := range servers {
		client := newClient(t, c.url)
		st, err := client.Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, st.Counts); diff != "" {
			t.Errorf("server %d counters (-want +got):\n%s", i, diff)
		}
		var events []eventagg.Event
		seen := map[eventagg.Key]bool{}
		for e, err := range client.Events(t.Context(), eventagg.Query{}) {
			if err != nil {
				t.Fatal(err)
			}
			if seen[e.Key()] {
				t.Errorf("server %d lists %v twice", i, e.Key())
			}
			seen[e.Key()] = true
			events = append(events, e)
		}
		if len(events) != len(distinct) {
			t.Errorf("server %d lists %d events, want %d", i, len(events), len(distinct))
		}
		listings = append(listings, events)
	}
	if diff := cmp.Diff(listings[0], listings[1]); diff != "" {
		t.Errorf("the servers list different events (-first +second):\n%s", diff)
	}
}
