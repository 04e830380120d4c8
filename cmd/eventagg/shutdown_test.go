package main

import (
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/ncruces/go-sqlite3"
)

// metric returns the value of the unlabelled sample name on the server's
// /metrics, failing the test if there is none.
func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	status, _, body := httpDo(t, "GET", url+"/metrics", "")
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok && status == 200 {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", name, v, err)
			}
			return f
		}
	}
	t.Fatalf("GET /metrics = %d without %s:\n%s", status, name, body)
	return 0
}

// TestShutdownGivesUpOnAStuckStore stops the server while its store is
// stuck (another process holds the database's write lock, and -busy-timeout
// would wait for a minute): the shutdown ends within -shutdown-timeout, the
// process says why and exits 1 without closing the store under the write,
// and the database is whole afterwards, without the call that was never
// written.
func TestShutdownGivesUpOnAStuckStore(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 2 * time.Second
	db := filepath.Join(t.TempDir(), "events.db")
	c := startChild(t, db, "-busy-timeout", "1m", "-shutdown-timeout", shutdownTimeout.String())
	client := newClient(t, c.url)
	if _, err := client.Publish(t.Context(), eventagg.Event{Topic: "t", EventID: "before"}); err != nil {
		t.Fatal(err)
	}
	other, err := sqlite3.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Exec(`BEGIN EXCLUSIVE`); err != nil {
		t.Fatal(err)
	}

	// Publish until a call waits in the queue: the writer is then in the
	// store, waiting for the lock, with the calls it took before.
	var (
		wg       sync.WaitGroup
		launched int
		acked    atomic.Int32
	)
	publish := func() {
		id := "late-" + strconv.Itoa(launched)
		launched++
		wg.Go(func() {
			if _, err := client.Publish(t.Context(), eventagg.Event{Topic: "t", EventID: id}); err == nil {
				acked.Add(1)
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for publish(); metric(t, c.url, "eventagg_queue_depth") == 0; publish() {
		if time.Now().After(deadline) {
			t.Fatalf("no call waited in the queue within 30s; log:\n%s", c.logs.all.String())
		}
		time.Sleep(20 * time.Millisecond) // the server tells nothing sooner
	}

	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	termAt := time.Now()
	err = c.wait()
	took := time.Since(termAt)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("after SIGTERM with a stuck store the process ended with %v, want exit status 1; log:\n%s", err, c.logs.all.String())
	}
	if took > shutdownTimeout+10*time.Second {
		t.Errorf("the process took %v to exit, far over its shutdown timeout of %v", took, shutdownTimeout)
	}
	for _, msg := range []string{"did not drain within the shutdown timeout", "store left open"} {
		if c.logs.count(msg) == 0 {
			t.Errorf("the log lacks %q:\n%s", msg, c.logs.all.String())
		}
	}
	if c.logs.count(`"msg":"store closed"`) != 0 {
		t.Errorf("the store was closed under a stuck write:\n%s", c.logs.all.String())
	}
	t.Logf("SIGTERM with a stuck store: exited after %v, %d calls launched", took.Round(time.Millisecond), launched)
	wg.Wait()
	if n := acked.Load(); n != 0 {
		t.Errorf("%d publishes to the stuck store were acknowledged", n)
	}

	if err := other.Exec(`ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	c = startChild(t, db)
	client = newClient(t, c.url)
	st, err := client.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// The calls in the stuck commit may be stored; those queued behind it
	// were never written.
	if st.Received != st.UniqueProcessed+st.DuplicateDropped || st.UniqueProcessed < 1 || st.UniqueProcessed > int64(launched) {
		t.Errorf("after the stuck shutdown Stats() = %+v, with %d calls launched; want \"before\" and at most %d others, consistent",
			st.Counts, launched, launched-1)
	}
	before := false
	for e, err := range client.Events(t.Context(), eventagg.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		before = before || e.EventID == "before"
	}
	if !before {
		t.Error(`the acknowledged "before" is not stored`)
	}
	c.terminate(t)
}

// TestOnConflictReject runs the server with -on-conflict reject: a publish
// holding an event resent with another payload gets 409 naming it, and the
// Client's error is the library's *ConflictError; nothing of it is stored.
func TestOnConflictReject(t *testing.T) {
	t.Parallel()
	url, stop, _ := MustRunMain(t, nil, "-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "events.db"), "-on-conflict", "reject")
	client := newClient(t, url)
	ctx := t.Context()
	first := eventagg.Event{Topic: "orders", EventID: "o-1", Payload: json.RawMessage(`{"total":42}`)}
	if _, err := client.Publish(ctx, first); err != nil {
		t.Fatal(err)
	}
	changed := first
	changed.Payload = json.RawMessage(`{"total":7}`)
	_, err := client.Publish(ctx, eventagg.Event{Topic: "orders", EventID: "o-2"}, changed)
	var conflict *eventagg.ConflictError
	if !errors.As(err, &conflict) || conflict.Index != 1 || conflict.Key != first.Key() || !errors.Is(err, eventagg.ErrConflict) {
		t.Errorf("Publish of a conflict = %v; want a *ConflictError for event 1, %v", err, first.Key())
	}
	status, _, body := httpDo(t, "POST", url+"/publish", `[{"topic":"orders","event_id":"o-1","payload":{"total":7}}]`)
	var e httpapi.ErrorResponse
	if status != 409 || json.Unmarshal([]byte(body), &e) != nil || e.Code != httpapi.CodeConflict || e.Index == nil || *e.Index != 0 || e.Field != "payload" {
		t.Errorf("POST /publish of a conflict = %d %s; want 409, code conflict, index 0, field payload", status, body)
	}
	res, err := client.Publish(ctx, eventagg.Event{Topic: "orders", EventID: "o-2"}, first)
	if err != nil || res.Processed != 1 || res.Duplicates != 1 || res.Conflicts != 0 {
		t.Errorf("Publish without a conflict = %+v, %v; want o-2 stored and o-1 a duplicate", res, err)
	}
	st, err := client.Stats(ctx)
	if want := (eventagg.Counts{Received: 3, UniqueProcessed: 2, DuplicateDropped: 1, Stored: 2}); err != nil || st.Counts != want {
		t.Errorf("Stats() = %+v, %v; want %+v: the refused publishes count nothing", st.Counts, err, want)
	}
	if err := stop(); err != nil {
		t.Errorf("run() after cancel = %v, want nil", err)
	}
}
