package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

// start runs the program on 127.0.0.1:0 over a database in t.TempDir() and
// returns its base URL; the program stops, and must return nil, when the
// test ends.
func start(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	done := make(chan error, 1)
	go func() { done <- run(ctx, ln, filepath.Join(t.TempDir(), "mounted.db"), logger) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	t.Cleanup(stop)
	// The listener already accepts connections: requests wait in its
	// backlog until run serves them.
	return "http://" + ln.Addr().String()
}

type answer struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, method, url, body string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// decode unmarshals a's JSON body into v.
func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want JSON", ct)
	}
	if err := json.Unmarshal([]byte(a.body), v); err != nil {
		t.Fatalf("body %q: %v", a.body, err)
	}
}

func TestAPIUnderPrefix(t *testing.T) {
	t.Parallel()
	base := start(t)
	ids := map[string]bool{} // X-Request-ID of every answer
	check := func(what string, a answer, status int) {
		t.Helper()
		if a.status != status {
			t.Errorf("%s: status %d, want %d; body %s", what, a.status, status, a.body)
		}
		id := a.header.Get("X-Request-ID")
		if id == "" {
			t.Errorf("%s: no X-Request-ID: the application's middleware was bypassed", what)
		} else if ids[id] {
			t.Errorf("%s: X-Request-ID %s seen before", what, id)
		}
		ids[id] = true
	}

	// The curl lines of the doc comment.
	var pub httpapi.PublishResponse
	a := do(t, "POST", base+"/eventagg/publish", `{"topic":"t","event_id":"1"}`)
	check("publish", a, http.StatusOK)
	if a.decode(t, &pub); pub.Processed != 1 || pub.Duplicates != 0 {
		t.Errorf("publish: %s, want 1 processed, 0 duplicates", a.body)
	}
	a = do(t, "POST", base+"/eventagg/publish", `[{"topic":"t","event_id":"1"},{"topic":"t","event_id":"2"}]`)
	check("publish again", a, http.StatusOK)
	if a.decode(t, &pub); pub.Processed != 1 || pub.Duplicates != 1 {
		t.Errorf("publish again: %s, want 1 processed, 1 duplicate", a.body)
	}

	var stats httpapi.StatsResponse
	a = do(t, "GET", base+"/eventagg/stats", "")
	check("stats", a, http.StatusOK)
	a.decode(t, &stats)
	if want := (eventagg.Counts{Received: 3, UniqueProcessed: 2, DuplicateDropped: 1, Stored: 2}); stats.Counts != want || stats.Topics["t"] != want {
		t.Errorf("stats: %s, want %+v overall and for topic t", a.body, want)
	}

	var events []eventagg.Event
	a = do(t, "GET", base+"/eventagg/events?topic=t", "")
	check("events", a, http.StatusOK)
	a.decode(t, &events)
	if len(events) != 2 || events[0].EventID != "1" || events[1].EventID != "2" || events[0].Seq >= events[1].Seq {
		t.Errorf("events: %s, want t/1 then t/2", a.body)
	}

	a = do(t, "GET", base+"/eventagg/health", "")
	check("health", a, http.StatusOK)

	// The application's own route is still there.
	a = do(t, "GET", base+"/", "")
	check("/", a, http.StatusOK)
	if !strings.Contains(a.body, "the application") {
		t.Errorf("/: body %q, want the application's", a.body)
	}

	// eventagg's errors under the prefix are its JSON ones.
	var e httpapi.ErrorResponse
	for _, path := range []string{"/eventagg/nope", "/eventagg/", "/eventagg/publish/more"} {
		a = do(t, "GET", base+path, "")
		check(path, a, http.StatusNotFound)
		if a.decode(t, &e); e.Error == "" {
			t.Errorf("%s: body %s, want a JSON error", path, a.body)
		}
	}
	a = do(t, "GET", base+"/eventagg/publish", "")
	check("GET /eventagg/publish", a, http.StatusMethodNotAllowed)
	if a.decode(t, &e); e.Error == "" || a.header.Get("Allow") != "POST" {
		t.Errorf("GET /eventagg/publish: Allow %q, body %s; want POST and a JSON error", a.header.Get("Allow"), a.body)
	}
	a = do(t, "POST", base+"/eventagg/publish", `{"topic":"t"}`)
	check("invalid event", a, http.StatusBadRequest)
	if a.decode(t, &e); e.Field != "event_id" {
		t.Errorf("invalid event: body %s, want field event_id", a.body)
	}
}

// TestClientUnderPrefix: httpapi.Client keeps the path of its base URL, so
// it talks to the mounted API.
func TestClientUnderPrefix(t *testing.T) {
	t.Parallel()
	base := start(t)
	c, err := httpapi.NewClient(base+"/eventagg/", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	batch := []eventagg.Event{{Topic: "t", EventID: "a"}, {Topic: "t", EventID: "b"}, {Topic: "u", EventID: "a"}}
	for i, want := range []int{3, 0} {
		res, err := c.Publish(ctx, batch...)
		if err != nil {
			t.Fatal(err)
		}
		if res.Processed != want || res.Duplicates != 3-want {
			t.Errorf("send %d: %+v, want %d processed", i+1, res, want)
		}
	}
	stats, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (eventagg.Counts{Received: 6, UniqueProcessed: 3, DuplicateDropped: 3, Stored: 3}); stats.Counts != want {
		t.Errorf("stats %+v, want %+v", stats.Counts, want)
	}
	var got []string
	for e, err := range c.Events(ctx, eventagg.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Topic+"/"+e.EventID)
	}
	if strings.Join(got, " ") != "t/a t/b u/a" {
		t.Errorf("events %v, want [t/a t/b u/a]", got)
	}
	if err := c.Health(ctx); err != nil {
		t.Error(err)
	}
}
