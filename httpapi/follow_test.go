package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

// stream reads a server-sent event stream line by line, by hand, so that
// the tests see exactly what the server wrote.
type stream struct {
	resp  *http.Response
	lines chan string // closed at the end of the body
}

// openStream sends GET target with the given headers to srv and returns the
// stream once its headers arrived: the follow is then under way.
func openStream(t *testing.T, ctx context.Context, srv *httptest.Server, target string, header map[string]string) *stream {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	s := &stream{resp: resp, lines: make(chan string, 1024)}
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	return s
}

// sseEvent is one dispatched event: its id and data, and the comments seen
// before it.
type sseEvent struct {
	id, data string
	comments int
	retry    string
}

// next returns the next event (or comment block, data empty), failing the
// test if the stream ends or nothing comes within a minute.
func (s *stream) next(t *testing.T) sseEvent {
	t.Helper()
	var ev sseEvent
	var data []string
	timeout := time.After(time.Minute)
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				t.Fatalf("the stream ended; partial event %+v", ev)
			}
			switch {
			case line == "":
				ev.data = strings.Join(data, "\n")
				return ev
			case strings.HasPrefix(line, ":"):
				ev.comments++
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "data: "):
				data = append(data, line[6:])
			case strings.HasPrefix(line, "retry: "):
				ev.retry = line[7:]
			default:
				t.Fatalf("unexpected line %q in the stream", line)
			}
		case <-timeout:
			t.Fatal("no event within a minute")
		}
	}
}

// event returns the next event that has data, skipping heartbeats.
func (s *stream) event(t *testing.T) (string, eventagg.Event) {
	t.Helper()
	for {
		ev := s.next(t)
		if ev.data == "" {
			continue
		}
		var e eventagg.Event
		if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
			t.Fatalf("data %q is not an event: %v", ev.data, err)
		}
		return ev.id, e
	}
}

// ended reports whether the stream ends (within a minute) with no more events.
func (s *stream) ended(t *testing.T) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				return
			}
			if strings.HasPrefix(line, "data:") {
				t.Fatalf("the stream sent %q, want its end", line)
			}
		case <-timeout:
			t.Fatal("the stream did not end within a minute")
		}
	}
}

func startHTTP(t *testing.T, s *server) *httptest.Server {
	srv := httptest.NewUnstartedServer(checkedHandler(t, s.h))
	srv.Config.RegisterOnShutdown(s.h.CloseFollows)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func TestFollowStream(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil, nil, nil)
	srv := startHTTP(t, s)
	publishN(t, s, "a", 2)
	st := openStream(t, t.Context(), srv, "/events?follow=true", nil)
	if ct := st.resp.Header.Get("Content-Type"); st.resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("follow answered %d %q, want 200 text/event-stream", st.resp.StatusCode, ct)
	}
	if cc := st.resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	if first := st.next(t); first.retry == "" || first.data != "" {
		t.Fatalf("first block = %+v, want a retry hint alone", first)
	}
	for i := 1; i <= 2; i++ {
		id, e := st.event(t)
		if id != strconv.Itoa(i) || e.Seq != int64(i) || e.Topic != "a" {
			t.Fatalf("event %d = id %s %+v", i, id, e)
		}
	}
	// Published after the follower caught up, with a payload on several
	// lines: it arrives as several data lines that join into its JSON.
	body := `[{"topic":"b","event_id":"x","payload":{` + "\n" + `"k": 1,` + "\r\n" + `"j": 2` + "\r" + `}},{"topic":"a","event_id":"1"}]`
	if resp := s.do(t, http.MethodPost, "/publish", body); resp.status != 200 {
		t.Fatalf("publish: %d %s", resp.status, resp.body)
	}
	id, e := st.event(t)
	if id != "3" || e.EventID != "x" || string(e.Payload) != "{\n\"k\": 1,\n\"j\": 2\n}" {
		t.Fatalf("new event = id %s %+v (payload %q)", id, e, e.Payload)
	}
}

func TestFollowResumesAndFilters(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil, nil, nil)
	srv := startHTTP(t, s)
	for i := range 6 {
		publishOne(t, s, []string{"a", "b"}[i%2], strconv.Itoa(i))
	}
	// Last-Event-ID wins over after: an EventSource resends its first URL.
	st := openStream(t, t.Context(), srv, "/events?follow=true&topic=a&after=0", map[string]string{"Last-Event-ID": "3"})
	id, e := st.event(t)
	if id != "5" || e.EventID != "4" {
		t.Fatalf("resumed follow's first event = id %s %+v, want seq 5 (a/4)", id, e)
	}
	publishOne(t, s, "b", "x")
	publishOne(t, s, "a", "y")
	if id, e := st.event(t); id != "8" || e.EventID != "y" {
		t.Fatalf("next event = id %s %+v, want seq 8 (a/y)", id, e)
	}
	// A limit ends the stream after that many events.
	lim := openStream(t, t.Context(), srv, "/events?follow=true&after=6&limit=2", nil)
	for _, want := range []string{"7", "8"} {
		if id, _ := lim.event(t); id != want {
			t.Fatalf("limited follow: id %s, want %s", id, want)
		}
	}
	lim.ended(t)
}

func publishOne(t *testing.T, s *server, topic, id string) {
	t.Helper()
	if resp := s.do(t, http.MethodPost, "/publish", fmt.Sprintf(`{"topic":%q,"event_id":%q}`, topic, id)); resp.status != 200 {
		t.Fatalf("publish: %d %s", resp.status, resp.body)
	}
}

func TestFollowHeartbeat(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil, nil, &httpapi.Options{Heartbeat: 20 * time.Millisecond})
	// The server's read timeout must not end a follow, which reads nothing.
	srv := httptest.NewUnstartedServer(checkedHandler(t, s.h))
	srv.Config.ReadTimeout = 100 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	st := openStream(t, t.Context(), srv, "/events?follow=true", nil)
	beats := 0
	for beats < 10 { // 200 ms of heartbeats: past the read timeout
		beats += st.next(t).comments
	}
	publishOne(t, s, "a", "1")
	if id, _ := st.event(t); id != "1" {
		t.Fatalf("event after heartbeats: id %s, want 1", id)
	}
}

func TestFollowRefusals(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil, nil, &httpapi.Options{MaxFollowers: 1})
	// following counts the handlers under way, which wake the test on
	// followed once they have returned (and freed their slot). Waiting for
	// a connection to close instead could be woken by another request's.
	var following atomic.Int64
	followed := make(chan struct{}, 16)
	srv := httptest.NewServer(checkedHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		following.Add(1)
		s.h.ServeHTTP(w, r)
		following.Add(-1)
		select {
		case followed <- struct{}{}:
		default: // a wake-up is pending already
		}
	})))
	t.Cleanup(srv.Close)
	for _, c := range []struct {
		target, lastID string
		status         int
		code           string
	}{
		{"/events?follow=yes", "", 400, httpapi.CodeBadRequest},
		{"/events?follow=true&after=-1", "", 400, httpapi.CodeBadRequest},
		{"/events?follow=true", "x", 400, httpapi.CodeBadRequest},
		{"/events?follow=true&limit=0", "", 400, httpapi.CodeBadRequest},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+c.target, nil)
		if c.lastID != "" {
			req.Header.Set("Last-Event-ID", c.lastID)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body httpapi.ErrorResponse
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.status || body.Code != c.code || body.Error == "" {
			t.Errorf("GET %s (Last-Event-ID %q) = %d %+v, want %d %s", c.target, c.lastID, resp.StatusCode, body, c.status, c.code)
		}
	}
	// One follower at most: the second gets 503 until the first leaves.
	ctx, cancel := context.WithCancel(t.Context())
	first := openStream(t, ctx, srv, "/events?follow=true", nil)
	first.next(t)
	if resp := s.do(t, http.MethodGet, "/events?follow=true", ""); resp.status != 503 || !strings.Contains(string(resp.body), httpapi.CodeTooManyFollowers) || resp.header.Get("Retry-After") == "" {
		t.Fatalf("second follower: %d %s, want 503 too_many_followers with Retry-After", resp.status, resp.body)
	}
	// Plain listings are not followers.
	if resp := s.do(t, http.MethodGet, "/events", ""); resp.status != 200 {
		t.Fatalf("listing while a follow is under way: %d %s", resp.status, resp.body)
	}
	cancel()
	first.resp.Body.Close()
	for following.Load() > 0 { // the first follow's handler has returned: its slot is free
		<-followed
	}
	if again := openStream(t, t.Context(), srv, "/events?follow=true", nil); again.resp.StatusCode != 200 {
		t.Fatalf("follow once the first one left: %d", again.resp.StatusCode)
	}
}

func TestFollowEndsAtCloseFollowsAndShutdown(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil, nil, nil)
	srv := startHTTP(t, s)
	st := openStream(t, t.Context(), srv, "/events?follow=true", nil)
	st.next(t)
	publishOne(t, s, "a", "1")
	st.event(t)
	// http.Server.Shutdown runs CloseFollows (registered by startHTTP), so
	// that it does not wait for streams that never end.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := srv.Config.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a follow under way: %v", err)
	}
	st.ended(t)
	// Later follows are refused.
	if resp := s.do(t, http.MethodGet, "/events?follow=true", ""); resp.status != 503 {
		t.Fatalf("follow after CloseFollows: %d %s, want 503", resp.status, resp.body)
	}

	// Shutting the Aggregator down ends a stream once it has sent every event.
	s2 := newServer(t, nil, nil, nil)
	srv2 := startHTTP(t, s2)
	st2 := openStream(t, t.Context(), srv2, "/events?follow=true", nil)
	st2.next(t)
	publishOne(t, s2, "a", "1")
	if err := s2.agg.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if id, _ := st2.event(t); id != "1" {
		t.Fatalf("event before the Aggregator's shutdown: id %s", id)
	}
	st2.ended(t)
}

// notTailer is a Backend without Tail.
type notTailer struct{ httpapi.Backend }

func TestFollowNeedsATailer(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil, nil, nil)
	h := httpapi.NewHandler(notTailer{s.agg}, nil)
	rec := httptest.NewRecorder()
	checkedHandler(t, h).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/events?follow=true", nil))
	if rec.Code != http.StatusNotImplemented || !strings.Contains(rec.Body.String(), httpapi.CodeNotImplemented) {
		t.Fatalf("follow on a Backend without Tail: %d %s, want 501 not_implemented", rec.Code, rec.Body)
	}
}

func TestFollowNeedsTheReadToken(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil, nil, &httpapi.Options{Token: "secret", TokenReads: true})
	srv := startHTTP(t, s)
	resp, err := srv.Client().Get(srv.URL + "/events?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("follow without the token: %d, want 401", resp.StatusCode)
	}
	st := openStream(t, t.Context(), srv, "/events?follow=true", map[string]string{"Authorization": "Bearer secret"})
	if st.resp.StatusCode != 200 {
		t.Fatalf("follow with the token: %d", st.resp.StatusCode)
	}
}

func TestFollowMetric(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil, nil, nil)
	srv := startHTTP(t, s)
	st := openStream(t, t.Context(), srv, "/events?follow=true", nil)
	st.next(t)
	m := parseProm(t, string(s.do(t, http.MethodGet, "/metrics", "").body))
	if m["eventagg_followers"] != 1 {
		t.Errorf("eventagg_followers = %v with one follow under way, want 1", m["eventagg_followers"])
	}
}
