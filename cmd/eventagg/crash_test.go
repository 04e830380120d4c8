package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/ncruces/go-sqlite3"
)

var longTests = flag.Bool("long", false, "run the long crash and shutdown tests (or set EVENTAGG_LONG=1)")

// long reports whether the long versions of the crash tests should run.
func long() bool { return *longTests || os.Getenv("EVENTAGG_LONG") == "1" }

// testSeed returns the seed of a randomised test, from EVENTAGG_SEED if set,
// and logs it so that a failure can be replayed.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("EVENTAGG_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("EVENTAGG_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (replay with EVENTAGG_SEED=%d)", seed, seed)
	return seed
}

// ledger is what publishers sent and what the server acknowledged.
type ledger struct {
	mu          sync.Mutex
	sent        []eventagg.Key        // every key sent, in order
	sentSet     map[eventagg.Key]bool // the same, as a set
	acked       map[eventagg.Key]bool // keys of batches answered 200
	ackedCount  eventagg.Counts       // summed over the 200 answers
	ackedBodies int                   // requests answered 200
	sentEvents  int64                 // events in all requests sent
}

func newLedger() *ledger {
	return &ledger{sentSet: map[eventagg.Key]bool{}, acked: map[eventagg.Key]bool{}}
}

// payloadFor is the payload a key is always sent with.
func payloadFor(k eventagg.Key) json.RawMessage {
	return json.RawMessage(`{"key":` + strconv.Quote(k.Topic+"/"+k.EventID) + `,"n":[1,2,3]}`)
}

// batch returns size events: new keys named after prefix, and now and then
// a resend of a key sent before (possibly in a batch whose answer was lost
// in a crash) or a repeat within the batch.
func (l *ledger) batch(rng *rand.Rand, prefix string, next *int, size int) []eventagg.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	events := make([]eventagg.Event, 0, size)
	for range size {
		var k eventagg.Key
		switch r := rng.IntN(10); {
		case r < 3 && len(l.sent) > 0:
			k = l.sent[rng.IntN(len(l.sent))]
		case r == 3 && len(events) > 0:
			k = events[rng.IntN(len(events))].Key()
		default:
			k = eventagg.Key{Topic: "topic-" + strconv.Itoa(rng.IntN(5)), EventID: prefix + "-" + strconv.Itoa(*next)}
			*next++
			l.sent = append(l.sent, k)
			l.sentSet[k] = true
		}
		events = append(events, eventagg.Event{Topic: k.Topic, EventID: k.EventID, Source: "crash-test", Payload: payloadFor(k)})
	}
	l.sentEvents += int64(size)
	return events
}

// ack records a batch answered 200 and returns how many have been.
func (l *ledger) ack(events []eventagg.Event, res eventagg.Result) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range events {
		l.acked[e.Key()] = true
	}
	l.ackedCount.Received += int64(len(events))
	l.ackedCount.UniqueProcessed += int64(res.Processed)
	l.ackedCount.DuplicateDropped += int64(res.Duplicates)
	l.ackedCount.Conflicts += int64(res.Conflicts)
	l.ackedBodies++
	return l.ackedBodies
}

// audit is what ledger.audit found on a server.
type audit struct {
	stored  int      // events stored
	missing int      // acknowledged events not stored
	dups    int      // events stored twice
	lost    []string // acknowledged data not stored: missing events (the first 10), counters short of the acknowledged
	wrong   []string // everything else: events stored twice or never sent, bad payloads or seqs, inconsistent counters
}

// audit reads everything the server at url holds and compares it with the
// ledger; see verify. It fails the test only if the server cannot be read.
func (l *ledger) audit(t *testing.T, url string) audit {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	ctx := t.Context()
	client := newClient(t, url)
	var a audit
	stored := make(map[eventagg.Key]bool)
	perTopic := make(map[string]int64)
	var lastSeq int64
	for e, err := range client.Events(ctx, eventagg.Query{}) {
		if err != nil {
			t.Fatalf("listing events: %v", err)
		}
		k := e.Key()
		switch {
		case stored[k]:
			a.dups++
			a.wrong = append(a.wrong, fmt.Sprintf("event %v is stored twice", k))
		case !l.sentSet[k]:
			a.wrong = append(a.wrong, fmt.Sprintf("event %v is stored but was never sent", k))
		case string(e.Payload) != string(payloadFor(k)):
			a.wrong = append(a.wrong, fmt.Sprintf("event %v has payload %s, want %s", k, e.Payload, payloadFor(k)))
		case e.Seq <= lastSeq:
			a.wrong = append(a.wrong, fmt.Sprintf("event %v has seq %d after seq %d", k, e.Seq, lastSeq))
		}
		stored[k] = true
		lastSeq = e.Seq
		perTopic[k.Topic]++
	}
	a.stored = len(stored)
	for k := range l.acked {
		if !stored[k] {
			if a.missing++; a.missing <= 10 {
				a.lost = append(a.lost, fmt.Sprintf("acknowledged event %v is not stored", k))
			}
		}
	}
	st, err := client.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.UniqueProcessed != int64(len(stored)) || st.Received != st.UniqueProcessed+st.DuplicateDropped {
		a.wrong = append(a.wrong, fmt.Sprintf("Stats() = %+v with %d events stored; want unique_processed = stored and received = unique + duplicates",
			st.Counts, len(stored)))
	}
	for topic, c := range st.Topics {
		if c.UniqueProcessed != perTopic[topic] || c.Received != c.UniqueProcessed+c.DuplicateDropped {
			a.wrong = append(a.wrong, fmt.Sprintf("topic %s counters %+v with %d events stored", topic, c, perTopic[topic]))
		}
	}
	// A batch can commit and lose its 200 in a crash, so the counters may
	// exceed what the 200s reported, but never fall short of it, nor exceed
	// what was sent.
	if st.Received < l.ackedCount.Received {
		a.lost = append(a.lost, fmt.Sprintf("received = %d; want at least %d (acknowledged)", st.Received, l.ackedCount.Received))
	}
	if st.Received > l.sentEvents {
		a.wrong = append(a.wrong, fmt.Sprintf("received = %d; want at most %d (sent)", st.Received, l.sentEvents))
	}
	return a
}

// verify reads everything the server at url holds and checks it against the
// ledger: every acknowledged key is stored, no key is stored twice, nothing
// is stored that was never sent, payloads are intact, and the counters agree
// with the stored events. It returns the number of events stored.
func (l *ledger) verify(t *testing.T, url string) int {
	t.Helper()
	a := l.audit(t, url)
	for _, p := range append(a.wrong, a.lost...) {
		t.Error(p)
	}
	if a.missing > 0 || a.dups > 0 {
		t.Fatalf("%d acknowledged events missing, %d stored twice", a.missing, a.dups)
	}
	return a.stored
}

// publishUntil runs publishers against url until stop is closed. A publisher
// ends at its first failure; a failure before stop is closed is an error,
// unless allowed returns true for it. The channel returned is closed once
// warmup requests have been answered 200; done waits for the publishers.
func (l *ledger) publishUntil(t *testing.T, url string, rng *rand.Rand, publishers, maxBatch, warmup int, round string,
	stop <-chan struct{}, allowed func(error) bool) (warm <-chan struct{}, done func()) {
	var wg sync.WaitGroup
	warmed := make(chan struct{})
	var once sync.Once
	for p := range publishers {
		prng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		wg.Go(func() {
			client, err := httpapi.NewClient(url, &httpapi.ClientOptions{MaxAttempts: 1, HTTPClient: &http.Client{Timeout: time.Minute}})
			if err != nil {
				t.Error(err)
				return
			}
			next := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				batch := l.batch(prng, fmt.Sprintf("%s-p%d", round, p), &next, 1+prng.IntN(maxBatch))
				res, err := client.Publish(context.Background(), batch...)
				if err != nil {
					select {
					case <-stop:
					default:
						if allowed == nil || !allowed(err) {
							t.Errorf("publisher %d: %v", p, err)
						}
					}
					return
				}
				if res.Processed+res.Duplicates != len(batch) {
					t.Errorf("Publish(%d events) = %+v", len(batch), res)
				}
				if l.ack(batch, res) >= warmup {
					once.Do(func() { close(warmed) })
				}
			}
		})
	}
	return warmed, wg.Wait
}

// TestCrashConsistency SIGKILLs the server at random moments while
// concurrent publishers send new events and resend old ones, over several
// cycles on one database, and after each restart checks the store against
// what was acknowledged (see ledger.verify). go test -long runs it longer.
func TestCrashConsistency(t *testing.T) {
	cycles, publishers, maxBatch, maxLife := 3, 4, 20, 250*time.Millisecond
	if long() {
		cycles, publishers, maxBatch, maxLife = 30, 16, 50, 1500*time.Millisecond
	}
	rng := rand.New(rand.NewPCG(testSeed(t), 1))
	db := filepath.Join(t.TempDir(), "events.db")
	l := newLedger()
	start := time.Now()
	for cycle := range cycles {
		c := startChild(t, db)
		stored := l.verify(t, c.url)
		t.Logf("cycle %d: %d events stored, %d distinct acknowledged so far", cycle, stored, len(l.acked))

		dying := make(chan struct{})
		_, wait := l.publishUntil(t, c.url, rng, publishers, maxBatch, 0, "c"+strconv.Itoa(cycle), dying, nil)
		time.Sleep(time.Duration(rng.Int64N(int64(maxLife)))) // a random moment to crash
		close(dying)
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.wait()
		wait()
	}
	c := startChild(t, db)
	stored := l.verify(t, c.url)
	c.terminate(t)
	integrityCheck(t, db)
	t.Logf("%d SIGKILL cycles in %v: %d requests answered 200 carrying %d events (%d distinct), %d events sent, %d stored; missing 0, stored twice 0",
		cycles, time.Since(start).Round(time.Millisecond), l.ackedBodies,
		l.ackedCount.Received, len(l.acked), l.sentEvents, stored)
}

// integrityCheck runs PRAGMA integrity_check on the database file.
func integrityCheck(t *testing.T, db string) {
	t.Helper()
	c, err := sqlite3.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stmt, _, err := c.Prepare(`PRAGMA integrity_check`)
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	for stmt.Step() {
		if got := stmt.ColumnText(0); got != "ok" {
			t.Errorf("PRAGMA integrity_check: %s", got)
		}
	}
	if err := stmt.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestSIGTERMUnderLoad stops the server while publishers run: every request
// answered 200 is stored, the others are refused cleanly (a 503 or a
// refused or closed connection, never another status), and the process
// exits 0 within its shutdown timeout.
func TestSIGTERMUnderLoad(t *testing.T) {
	publishers, maxBatch, warmup := 4, 20, 50
	if long() {
		publishers, maxBatch, warmup = 16, 50, 2000
	}
	const shutdownTimeout = 10 * time.Second
	rng := rand.New(rand.NewPCG(testSeed(t), 2))
	db := filepath.Join(t.TempDir(), "events.db")
	c := startChild(t, db, "-shutdown-timeout", shutdownTimeout.String())
	l := newLedger()
	exited := make(chan struct{})
	var (
		mu      sync.Mutex
		refused = map[string]int{}
	)
	// After SIGTERM a publisher may meet a 503 or a closed connection; it
	// stops there. Any other answer is an error.
	allowed := func(err error) bool {
		var apiErr *httpapi.APIError
		if errors.As(err, &apiErr) {
			if apiErr.StatusCode != http.StatusServiceUnavailable || apiErr.Message == "" {
				return false
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if errors.As(err, &apiErr) {
			refused["503"]++
		} else {
			refused["connection"]++
		}
		return true
	}
	warm, wait := l.publishUntil(t, c.url, rng, publishers, maxBatch, warmup, "load", exited, allowed)
	<-warm // the load is under way
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	termAt := time.Now()
	err := c.wait()
	took := time.Since(termAt)
	close(exited)
	wait()
	if err != nil {
		t.Fatalf("after SIGTERM the process ended with %v, want exit 0; log:\n%s", err, c.logs.all.String())
	}
	if took >= shutdownTimeout {
		t.Errorf("the process took %v to exit, over its shutdown timeout of %v", took, shutdownTimeout)
	}
	// Once it has exited, new requests are refused.
	if _, err := newClient(t, c.url).Publish(t.Context(), eventagg.Event{Topic: "late", EventID: "1"}); err == nil {
		t.Error("a publish after exit succeeded")
	}
	c = startChild(t, db)
	stored := l.verify(t, c.url)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("SIGTERM under load: exited 0 in %v; %d requests answered 200 carrying %d events (%d distinct), %d stored; refused afterwards: %v",
		took.Round(time.Millisecond), l.ackedBodies, l.ackedCount.Received,
		len(l.acked), stored, refused)
}
