package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
)

// receiver is one run of the program, on a port of its own.
type receiver struct {
	t    testing.TB
	url  string       // of the webhook endpoint
	logs *syncBuffer  // what run logged
	stop func() error // ends run and returns its error; idempotent
}

// start runs the program on 127.0.0.1:0 with the database at db, and stops
// it when the test ends if the test has not.
func start(t *testing.T, db string) *receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, ln, config{db: db}, log.New(logs, "", 0)) }()
	stop := sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	// The listener already accepts connections: requests wait in its
	// backlog until run serves them, so there is nothing to wait for.
	return &receiver{url: "http://" + ln.Addr().String() + "/webhook", logs: logs, stop: stop, t: t}
}

// post delivers body with the delivery id (none if empty) and returns the status.
func (r *receiver) post(id, body string) int {
	r.t.Helper()
	status, _ := r.postAnswer(id, body)
	return status
}

// postAnswer is post, returning the answer's body too.
func (r *receiver) postAnswer(id, body string) (int, string) {
	r.t.Helper()
	req, err := http.NewRequestWithContext(r.t.Context(), http.MethodPost, r.url, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	if id != "" {
		req.Header.Set("X-Delivery-ID", id)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.StatusCode, string(answer)
}

// processed counts the times delivery id was processed in the logs.
func (r *receiver) processed(id string) int {
	return strings.Count(r.logs.String(), "delivery "+id+": processing ")
}

func TestRedeliveryIsNotProcessedAgain(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "webhooks.db")

	first := start(t, db)
	steps := []struct {
		id, body string
		want     int
		conflict bool
	}{
		{"d-1", `{"order":42}`, http.StatusAccepted, false}, // processed
		{"d-1", `{"order":42}`, http.StatusOK, false},       // redelivery, ignored
		{"d-2", `{"order":43}`, http.StatusAccepted, false},
		{"d-1", `{"order":"changed"}`, http.StatusOK, true}, // the id decides, not the body: a conflict
		{"d-2", `{"order":43}`, http.StatusOK, false},
	}
	for _, s := range steps {
		got, answer := first.postAnswer(s.id, s.body)
		if got != s.want || strings.HasPrefix(answer, "conflict:") != s.conflict {
			t.Errorf("POST %s %s: %d %q, want %d, a conflict: %v", s.id, s.body, got, answer, s.want, s.conflict)
		}
	}
	if err := first.stop(); err != nil {
		t.Fatalf("stopping the first run: %v", err)
	}
	for _, id := range []string{"d-1", "d-2"} {
		if n := first.processed(id); n != 1 {
			t.Errorf("first run processed %s %d times, want once; log:\n%s", id, n, first.logs)
		}
	}
	if n := strings.Count(first.logs.String(), "delivery d-1: conflict: "); n != 1 {
		t.Errorf("first run logged %d conflicts for d-1, want 1; log:\n%s", n, first.logs)
	}

	// A restart on the same database remembers the deliveries.
	second := start(t, db)
	for _, s := range []struct {
		id, body string
		want     int
	}{
		{"d-1", `{"order":42}`, http.StatusOK},
		{"d-2", `{"order":43}`, http.StatusOK},
		{"d-3", `{"order":44}`, http.StatusAccepted},
		{"d-3", `{"order":44}`, http.StatusOK},
	} {
		if got := second.post(s.id, s.body); got != s.want {
			t.Errorf("after restart, POST %s: status %d, want %d", s.id, got, s.want)
		}
	}
	if err := second.stop(); err != nil {
		t.Fatalf("stopping the second run: %v", err)
	}
	for id, want := range map[string]int{"d-1": 0, "d-2": 0, "d-3": 1} {
		if n := second.processed(id); n != want {
			t.Errorf("second run processed %s %d times, want %d; log:\n%s", id, n, want, second.logs)
		}
	}

	// The database holds each delivery once, every copy counted, the
	// changed one as a conflict.
	stats := readStats(t, db)
	want := eventagg.Counts{Received: 9, UniqueProcessed: 3, DuplicateDropped: 6, Conflicts: 1, Stored: 3}
	if stats.Counts != want {
		t.Errorf("stored counters %+v, want %+v", stats.Counts, want)
	}
}

func TestBadRequestIs400(t *testing.T) {
	t.Parallel()
	r := start(t, filepath.Join(t.TempDir(), "webhooks.db"))
	for _, c := range []struct {
		name, id, body string
	}{
		{"no X-Delivery-ID", "", `{"order":42}`},
		{"non-JSON body", "bad-1", `order=42`},
		{"empty body", "bad-2", ``},
		{"truncated JSON", "bad-3", `{"order":`},
		{"delivery id over 255 bytes", strings.Repeat("x", 256), `{"order":42}`},
		{"payload not I-JSON", "bad-4", `{"order":1,"order":2}`},
	} {
		if got := r.post(c.id, c.body); got != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", c.name, got)
		}
	}
	// Nothing was recorded: the same ids delivered properly are new.
	for _, id := range []string{"bad-1", "bad-2", "bad-3", "bad-4"} {
		if got := r.post(id, `{"order":42}`); got != http.StatusAccepted {
			t.Errorf("POST %s after a bad request with that id: status %d, want 202", id, got)
		}
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(r.logs.String(), ": processing "); n != 4 {
		t.Errorf("processed %d deliveries, want 4; log:\n%s", n, r.logs)
	}
}

// readStats opens the database at path after the program closed it.
func readStats(t *testing.T, path string) eventagg.Stats {
	t.Helper()
	store, err := eventagg.OpenSQLite(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	stats, err := store.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return stats
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestMain runs the program itself when the test binary is started with
// WEBHOOK_TEST_MAIN=1, so that a test can run it as a process and kill it.
func TestMain(m *testing.M) {
	if os.Getenv("WEBHOOK_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// process runs the program as a process of its own on db, and returns it
// with its webhook URL and a channel of its log lines.
func process(t *testing.T, db string, args ...string) (*exec.Cmd, string, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-addr", "127.0.0.1:0", "-db", db}, args...)...)
	cmd.Env = append(os.Environ(), "WEBHOOK_TEST_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for line := range lines {
		if _, url, ok := strings.Cut(line, "webhook receiver on "); ok {
			return cmd, url, lines
		}
	}
	t.Fatal("the receiver ended before it listened")
	return nil, "", nil
}

// await reads log lines until one holds want.
func await(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the receiver's log ended before %q", want)
			}
			if strings.Contains(line, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no %q in the receiver's log within a minute", want)
		}
	}
}

// TestCrashWhileProcessingIsRedone kills the receiver (SIGKILL) while it
// processes a delivery, after the claim and before the completion: the
// sender's redelivery during the lease is turned away with 503 and
// Retry-After; the one after it is processed; a further one is not.
func TestCrashWhileProcessingIsRedone(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "webhooks.db")
	cmd, url, lines := process(t, db, "-work-time", "1h", "-lease", "2s")
	sent := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"order":42}`))
		req.Header.Set("X-Delivery-ID", "d-1")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered %d before the crash", resp.StatusCode)
		}
		sent <- err
	}()
	await(t, lines, "delivery d-1: processing")
	cmd.Process.Kill() // claimed, not completed
	cmd.Wait()
	<-sent // the sender saw the connection die: it will redeliver

	_, url, lines = process(t, db, "-lease", "2s")
	r := &receiver{t: t, url: url}
	// Within the lease the dead worker's claim holds the delivery.
	status, header, _ := r.postFull("d-1", `{"order":42}`)
	if status != http.StatusServiceUnavailable || header.Get("Retry-After") == "" {
		t.Fatalf("redelivery within the lease: %d (Retry-After %q), want 503 with Retry-After", status, header.Get("Retry-After"))
	}
	// Once it has lapsed, the redelivery is processed; then it is done.
	for giveUp := time.Now().Add(time.Minute); ; {
		status, _, _ = r.postFull("d-1", `{"order":42}`)
		if status != http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(giveUp) {
			t.Fatal("the dead worker's claim still holds the delivery a minute after its 2s lease")
		}
		time.Sleep(100 * time.Millisecond) // the sender's retry interval
	}
	if status != http.StatusAccepted {
		t.Fatalf("redelivery after the lease: %d, want 202 (processed)", status)
	}
	await(t, lines, "delivery d-1: processing")
	if status, _, _ = r.postFull("d-1", `{"order":42}`); status != http.StatusOK {
		t.Fatalf("redelivery after the completion: %d, want 200 (ignored)", status)
	}
	await(t, lines, "delivery d-1: redelivery, ignored")
}

// postFull is post, returning the answer's header and body too.
func (r *receiver) postFull(id, body string) (int, http.Header, string) {
	r.t.Helper()
	req, err := http.NewRequestWithContext(r.t.Context(), http.MethodPost, r.url, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("X-Delivery-ID", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(answer)
}
