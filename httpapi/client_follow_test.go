package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/google/go-cmp/cmp"
)

// A scriptServer stands for a server that follows speak to: it answers
// the n-th request with its n-th script, and once they run out it holds
// each request open, sending nothing, until the client goes. It records
// every request.
type scriptServer struct {
	scripts []func(w http.ResponseWriter, r *http.Request)
	ended   chan int // the number of each request whose answer is over

	mu   sync.Mutex
	reqs []scriptRequest
}

// scriptRequest is what a scriptServer saw of a request.
type scriptRequest struct {
	at          time.Time
	query       string
	lastEventID string
	auth        string
	accept      string
}

func newScriptServer(scripts ...func(w http.ResponseWriter, r *http.Request)) *scriptServer {
	return &scriptServer{scripts: scripts, ended: make(chan int, 100)}
}

func (s *scriptServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.reqs)
	s.reqs = append(s.reqs, scriptRequest{at: time.Now(), query: r.URL.RawQuery, lastEventID: r.Header.Get("Last-Event-ID"),
		auth: r.Header.Get("Authorization"), accept: r.Header.Get("Accept")})
	s.mu.Unlock()
	defer func() { s.ended <- n }()
	if r.URL.Path != "/events" {
		http.Error(w, "not a follow", http.StatusNotFound)
		return
	}
	if n < len(s.scripts) {
		s.scripts[n](w, r)
		return
	}
	<-r.Context().Done()
}

func (s *scriptServer) requests() []scriptRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// awaitEnd waits until the answer to request n is over.
func (s *scriptServer) awaitEnd(t *testing.T, n int) {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case m := <-s.ended:
			if m == n {
				return
			}
		case <-timeout.C:
			t.Fatalf("the answer to request %d is still under way: the client did not close the stream", n)
		}
	}
}

// sendSSE starts an event stream and sends chunks, each flushed; it
// reports whether the client took them.
func sendSSE(w http.ResponseWriter, chunks ...string) bool {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
	}
	rc := http.NewResponseController(w)
	for _, c := range chunks {
		if _, err := io.WriteString(w, c); err != nil {
			return false
		}
		if rc.Flush() != nil {
			return false
		}
	}
	return true
}

// streamOf is a script that sends chunks, then ends the stream.
func streamOf(chunks ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) { sendSSE(w, chunks...) }
}

// holdAfter is a script that sends chunks and keeps the stream open.
func holdAfter(chunks ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if sendSSE(w, chunks...) {
			<-r.Context().Done()
		}
	}
}

// failWith is a script that answers status with body, as JSON if it looks so.
func failWith(status int, body string, header ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		if strings.HasPrefix(body, "{") || strings.HasPrefix(body, "[") {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// sseFrame is event seq of topic "t" as the server streams it.
func sseFrame(seq int64) string {
	return fmt.Sprintf("id: %d\ndata: {\"topic\":\"t\",\"event_id\":\"e%d\",\"seq\":%d}\n\n", seq, seq, seq)
}

// seqEvent is the event that sseFrame(seq) streams.
func seqEvent(seq int64) eventagg.Event {
	return eventagg.Event{Topic: "t", EventID: fmt.Sprint("e", seq), Seq: seq}
}

func seqEvents(seqs ...int64) []eventagg.Event {
	var events []eventagg.Event
	for _, s := range seqs {
		events = append(events, seqEvent(s))
	}
	return events
}

// clientFollow ranges over c.Follow(ctx, q) until it ends or, if n > 0, n
// events came, and returns the events and the error it yielded. It fails
// the test if the sequence yields anything after an error.
func clientFollow(t *testing.T, ctx context.Context, c *httpapi.Client, q eventagg.Query, n int) ([]eventagg.Event, error) {
	t.Helper()
	var events []eventagg.Event
	var err error
	for e, ferr := range c.Follow(ctx, q) {
		if err != nil {
			t.Errorf("Follow yielded (%+v, %v) after the error %v", e, ferr, err)
			break
		}
		if ferr != nil {
			err = ferr
			continue
		}
		events = append(events, e)
		if len(events) == n {
			break
		}
	}
	return events, err
}

// stateLog records what Follow tells ClientOptions.FollowState.
type stateLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *stateLog) record(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

func (l *stateLog) get() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.errs)
}

// check compares the log with want: nil for "a stream opened", and for
// each failure a string the error must hold.
func (l *stateLog) check(t *testing.T, want ...string) {
	t.Helper()
	got := l.get()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		if want[i] == "" {
			ok = got[i] == nil
		} else {
			ok = got[i] != nil && strings.Contains(got[i].Error(), want[i])
		}
	}
	if !ok {
		t.Errorf("FollowState calls = %q, want (\"\" for nil) %q", got, want)
	}
}

// newFollowClient returns a Client of the real server at url that retries
// within milliseconds.
func newFollowClient(t *testing.T, url string, opts *httpapi.ClientOptions) *httpapi.Client {
	t.Helper()
	if opts == nil {
		opts = &httpapi.ClientOptions{}
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff, opts.MaxBackoff = time.Millisecond, 4*time.Millisecond
	}
	c, err := httpapi.NewClient(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testTimeout bounds a test on the network: a client that waits for bytes
// that never come makes it fail, not hang.
func testTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClientFollowReadsTheEventStream(t *testing.T) {
	t.Parallel()
	srv := newScriptServer(holdAfter(
		// A byte order mark may start the stream.
		"\uFEFFid: 1\ndata: "+`{"topic":"t","event_id":"e1"}`+"\n\n",
		": a comment\nretry: 10\n\n",
		// A pretty-printed event over data lines that end with \r\n, \r
		// and \n, the space after the colon optional (and only one is
		// stripped), the event ending with \r\n\r\n.
		"id: 2\r\ndata: {\"topic\":\"t\",\"event_id\":\"b\",\"payload\":{\r\ndata:   \"x\": [1,\rdata:     2]\ndata: },\"seq\":2}\r\n\r\n",
		": keep-alive\n\n",
		// An event of another type, an id without data and an unknown
		// field are no events.
		"event: other\nid: 3\ndata: "+`{"topic":"t","event_id":"e3","seq":3}`+"\n\n",
		"id: 99\n\nfoo: bar\n\n",
		// The type "message" is the default; the seq may come from the id
		// alone, which may follow the data.
		"event: message\ndata: "+`{"topic":"t","event_id":"e4"}`+"\nid: 4\n\n",
		// An \r\n cut after the \r, across chunks.
		"id: 5\r", "\ndata: "+`{"topic":"t","event_id":"e5","seq":5}`+"\r", "\n\r", "\n",
		// A \r ends the event without waiting for a \n that never comes.
		"id:6\rdata:"+`{"topic":"t","event_id":"e6","seq":6}`+"\r\r",
	))
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c := newFollowClient(t, ts.URL, nil)

	got, err := clientFollow(t, testTimeout(t), c, eventagg.Query{}, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := []eventagg.Event{seqEvent(1), {Topic: "t", EventID: "b", Payload: []byte("{\n  \"x\": [1,\n    2]\n}"), Seq: 2},
		seqEvent(4), seqEvent(5), seqEvent(6)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Follow() mismatch (-want +got):\n%s", diff)
	}
	if reqs := srv.requests(); len(reqs) != 1 || reqs[0].query != "follow=true" || reqs[0].accept != "text/event-stream" || reqs[0].lastEventID != "" {
		t.Errorf("requests = %+v, want one with ?follow=true, Accept: text/event-stream and no Last-Event-ID", reqs)
	}
	srv.awaitEnd(t, 0)
}

func TestClientFollowResumesWithoutDuplicates(t *testing.T) {
	t.Parallel()
	srv := newScriptServer(
		// The connection breaks in the middle of event 4: it is dropped.
		func(w http.ResponseWriter, r *http.Request) {
			sendSSE(w, "retry: 1\n\n", sseFrame(1), sseFrame(2), sseFrame(3), "id: 4\ndata: {\"topic\":\"t\",")
			panic(http.ErrAbortHandler)
		},
		// The server sends event 3 again (it should not): dropped too.
		streamOf(sseFrame(3), sseFrame(4), sseFrame(5)),
		holdAfter(sseFrame(6)),
	)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	var states stateLog
	c := newFollowClient(t, ts.URL, &httpapi.ClientOptions{Token: "s3cret", FollowState: states.record})

	got, err := clientFollow(t, testTimeout(t), c, eventagg.Query{Topic: "t"}, 6)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(seqEvents(1, 2, 3, 4, 5, 6), got); diff != "" {
		t.Errorf("Follow() across two lost streams mismatch (-want +got):\n%s", diff)
	}
	var lastIDs []string
	for _, r := range srv.requests() {
		lastIDs = append(lastIDs, r.lastEventID)
		if r.query != "follow=true&topic=t" || r.auth != "Bearer s3cret" {
			t.Errorf("request %+v, want ?follow=true&topic=t with the token", r)
		}
	}
	if diff := cmp.Diff([]string{"", "3", "5"}, lastIDs); diff != "" {
		t.Errorf("Last-Event-ID of each request mismatch (-want +got):\n%s", diff)
	}
	states.check(t, "", "unexpected EOF", "", "the server ended the stream", "")
	srv.awaitEnd(t, 2)
}

func TestClientFollowAfter(t *testing.T) {
	t.Parallel()
	// after goes in the query of every request; once events came,
	// Last-Event-ID, which takes precedence, says where to resume. Events
	// up to after are dropped should the server send them.
	srv := newScriptServer(streamOf(sseFrame(7), sseFrame(10), sseFrame(11)), holdAfter(sseFrame(12)))
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c := newFollowClient(t, ts.URL, nil)
	got, err := clientFollow(t, testTimeout(t), c, eventagg.Query{After: 10}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(seqEvents(11, 12), got); diff != "" {
		t.Errorf("Follow(After: 10) mismatch (-want +got):\n%s", diff)
	}
	reqs := srv.requests()
	if len(reqs) != 2 || reqs[0].query != "after=10&follow=true" || reqs[0].lastEventID != "10" ||
		reqs[1].query != "after=10&follow=true" || reqs[1].lastEventID != "11" {
		t.Errorf("requests = %+v, want ?after=10&follow=true twice, with Last-Event-ID 10 then 11", reqs)
	}
}

func TestClientFollowStopsOnPermanentErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script func(http.ResponseWriter, *http.Request)
		opts   httpapi.ClientOptions
		want   string // in the error
		status int    // of the APIError, if it is one
		opened bool   // whether a stream opened before the error
	}{
		{name: "BadRequest", script: failWith(400, `{"error":"unknown parameter","code":"bad_request"}`),
			want: "unknown parameter", status: 400},
		{name: "Unauthorized", script: failWith(401, `{"error":"token required","code":"unauthorized"}`),
			want: "token required", status: 401},
		{name: "NotFound", script: failWith(404, "404 page not found"), want: "page not found", status: 404},
		{name: "NotImplemented", script: failWith(501, `{"error":"cannot follow","code":"not_implemented"}`),
			want: "cannot follow", status: 501},
		{name: "NotAStream", script: failWith(200, `[]`), want: `Content-Type "application/json", not text/event-stream`},
		{name: "MalformedEvent", script: holdAfter("data: {\"topic\":\n\n"), opened: true, want: "decoding a streamed event"},
		{name: "NoSeq", script: holdAfter("data: {\"topic\":\"t\",\"event_id\":\"x\"}\n\n"), opened: true, want: "has no seq"},
		{name: "IdIsNotASeq", script: holdAfter("id: x1\ndata: {\"topic\":\"t\",\"event_id\":\"x\",\"seq\":1}\n\n"),
			opened: true, want: `id is "x1", not a seq`},
		{name: "IdIsAnotherSeq", script: holdAfter("id: 2\ndata: {\"topic\":\"t\",\"event_id\":\"x\",\"seq\":1}\n\n"),
			opened: true, want: "id is 2 but its seq 1"},
		{name: "EventTooLarge", opts: httpapi.ClientOptions{MaxFollowEventBytes: 100},
			script: holdAfter("data: {\"topic\":\"t\",\n", "data: \"event_id\":\""+strings.Repeat("x", 80)+"\"}\n\n"),
			opened: true, want: "over 100 bytes (ClientOptions.MaxFollowEventBytes)"},
		{name: "LineTooLong", opts: httpapi.ClientOptions{MaxFollowEventBytes: 100},
			script: holdAfter(":" + strings.Repeat(" keep-alive", 20)), opened: true, want: "over 100 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newScriptServer(tt.script, tt.script)
			ts := httptest.NewServer(srv)
			defer ts.Close()
			var states stateLog
			tt.opts.FollowState = states.record
			c := newFollowClient(t, ts.URL, &tt.opts)
			got, err := clientFollow(t, testTimeout(t), c, eventagg.Query{}, 0)
			if len(got) != 0 || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Follow() = %v, %v; want no events and an error with %q", got, err, tt.want)
			}
			var apiErr *httpapi.APIError
			if isAPI := errors.As(err, &apiErr); isAPI != (tt.status != 0) || (isAPI && apiErr.StatusCode != tt.status) {
				t.Errorf("Follow() error %#v, want an APIError: %v, with status %d", err, tt.status != 0, tt.status)
			}
			if n := len(srv.requests()); n != 1 {
				t.Errorf("%d requests, want 1: no retry", n)
			}
			if tt.opened {
				states.check(t, "")
			} else {
				states.check(t)
			}
			srv.awaitEnd(t, 0)
		})
	}
}

func TestClientFollowRetriesUnavailableServers(t *testing.T) {
	t.Parallel()
	srv := newScriptServer(
		failWith(503, `{"error":"too many follow streams under way (1); retry later","code":"too_many_followers"}`),
		failWith(502, "Bad Gateway"),
		failWith(429, `{"error":"slow down"}`),
		func(w http.ResponseWriter, r *http.Request) { // no HTTP answer at all
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			io.WriteString(conn, "garbage\r\n\r\n")
			conn.Close()
		},
		failWith(503, `{"error":"shutting down","code":"shutting_down"}`),
		holdAfter(sseFrame(1)),
	)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	var states stateLog
	c := newFollowClient(t, ts.URL, &httpapi.ClientOptions{FollowState: states.record})
	got, err := clientFollow(t, testTimeout(t), c, eventagg.Query{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(seqEvents(1), got); diff != "" {
		t.Errorf("Follow() mismatch (-want +got):\n%s", diff)
	}
	states.check(t, "too many follow streams", "502 Bad Gateway", "429", "malformed HTTP response", "shutting down", "")
	errs := states.get()
	var apiErr *httpapi.APIError
	if !errors.As(errs[0], &apiErr) || apiErr.Code != httpapi.CodeTooManyFollowers {
		t.Errorf("first FollowState error %#v, want an APIError with code too_many_followers", errs[0])
	}
	if !errors.Is(errs[4], eventagg.ErrClosed) {
		t.Errorf("fifth FollowState error %v, want one matching eventagg.ErrClosed", errs[4])
	}
}

func TestClientFollowEndsWithContext(t *testing.T) {
	t.Parallel()
	srv := newScriptServer(holdAfter(sseFrame(1)))
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c := newFollowClient(t, ts.URL, nil)
	ctx, cancel := context.WithCancel(testTimeout(t))
	defer cancel()
	var got []eventagg.Event
	for e, err := range c.Follow(ctx, eventagg.Query{}) {
		if err != nil {
			t.Fatalf("Follow() yielded %v after its context ended", err)
		}
		got = append(got, e)
		cancel() // and wait for the next event: there is none
	}
	if diff := cmp.Diff(seqEvents(1), got); diff != "" {
		t.Errorf("Follow() mismatch (-want +got):\n%s", diff)
	}
	srv.awaitEnd(t, 0)
	if n := len(srv.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestClientFollowLimit(t *testing.T) {
	t.Parallel()
	srv := newScriptServer(holdAfter(sseFrame(1), sseFrame(2), sseFrame(3)), holdAfter(sseFrame(1), sseFrame(2)))
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c := newFollowClient(t, ts.URL, nil)
	seq := c.Follow(testTimeout(t), eventagg.Query{Limit: 2})
	for run := range 2 { // each run starts over
		var got []eventagg.Event
		for e, err := range seq {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, e)
		}
		if diff := cmp.Diff(seqEvents(1, 2), got); diff != "" {
			t.Errorf("run %d of Follow(Limit: 2) mismatch (-want +got):\n%s", run, diff)
		}
		srv.awaitEnd(t, run)
	}
	if reqs := srv.requests(); len(reqs) != 2 || reqs[1].lastEventID != "" {
		t.Errorf("requests = %+v, want 2, the second without Last-Event-ID", reqs)
	}
}

// streamTransport serves requests with a handler in process, its answer
// streamed through a pipe, so that a follow can run in a synctest bubble.
// The handler's request ends when the client closes the answer's body.
type streamTransport struct{ h http.Handler }

func (st streamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context()) // the handler's
	pr, pw := io.Pipe()
	w := &pipeWriter{pw: pw, header: http.Header{}, ready: make(chan struct{})}
	go func() {
		defer cancel()
		st.h.ServeHTTP(w, req.WithContext(ctx))
		w.WriteHeader(http.StatusOK)
		pw.Close()
	}()
	stop := context.AfterFunc(req.Context(), func() { pr.CloseWithError(context.Cause(req.Context())) })
	select {
	case <-w.ready:
	case <-req.Context().Done():
		return nil, context.Cause(req.Context())
	}
	return &http.Response{Status: fmt.Sprint(w.status, " ", http.StatusText(w.status)), StatusCode: w.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: w.sent, Request: req,
		Body: pipeBody{pr, func() { cancel(); stop() }}}, nil
}

// pipeBody is the body of a streamTransport's answer.
type pipeBody struct {
	*io.PipeReader
	done func()
}

func (b pipeBody) Close() error { b.done(); return b.PipeReader.Close() }

// pipeWriter is the ResponseWriter of a streamTransport.
type pipeWriter struct {
	pw     *io.PipeWriter
	header http.Header
	once   sync.Once
	ready  chan struct{} // closed once the header is written
	status int
	sent   http.Header
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(status int) {
	w.once.Do(func() {
		w.status, w.sent = status, w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(b)
}

func (w *pipeWriter) Flush() {} // a pipe holds nothing back

// newBubbleClient returns a Client that reaches h through a streamTransport.
func newBubbleClient(t *testing.T, h http.Handler, timeout time.Duration, opts *httpapi.ClientOptions) *httpapi.Client {
	t.Helper()
	opts.HTTPClient = &http.Client{Transport: streamTransport{h}, Timeout: timeout}
	c, err := httpapi.NewClient("http://eventagg.test", opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientFollowWaitsBetweenAttempts(t *testing.T) {
	t.Parallel()
	type span struct{ min, max time.Duration }
	ms := time.Millisecond
	unavailable := failWith(503, `{"error":"the store is unavailable","code":"store_unavailable"}`)
	tests := []struct {
		name     string
		min, max time.Duration // ClientOptions.MinBackoff, MaxBackoff
		scripts  []func(http.ResponseWriter, *http.Request)
		want     []span // between a request and the next
	}{
		{name: "DoublesUpToMaxBackoff", min: 100 * ms, max: 400 * ms,
			scripts: []func(http.ResponseWriter, *http.Request){unavailable, unavailable, unavailable, unavailable, unavailable},
			want:    []span{{50 * ms, 100 * ms}, {100 * ms, 200 * ms}, {200 * ms, 400 * ms}, {200 * ms, 400 * ms}, {200 * ms, 400 * ms}}},
		{name: "StartsOverAfterAnEvent", min: 100 * ms, max: 400 * ms,
			scripts: []func(http.ResponseWriter, *http.Request){unavailable, unavailable, unavailable,
				streamOf(sseFrame(1)), unavailable},
			want: []span{{50 * ms, 100 * ms}, {100 * ms, 200 * ms}, {200 * ms, 400 * ms}, {50 * ms, 100 * ms}, {100 * ms, 200 * ms}}},
		{name: "StartsOverAfterMaxBackoffOpen", min: 100 * ms, max: 400 * ms,
			scripts: []func(http.ResponseWriter, *http.Request){unavailable, unavailable, unavailable,
				func(w http.ResponseWriter, r *http.Request) { sendSSE(w, ": hello\n\n"); time.Sleep(400 * ms) }, unavailable},
			want: []span{{50 * ms, 100 * ms}, {100 * ms, 200 * ms}, {200 * ms, 400 * ms}, {450 * ms, 500 * ms}, {100 * ms, 200 * ms}}},
		{name: "AStreamWithoutEventsIsAFailure", min: 100 * ms, max: 400 * ms,
			scripts: []func(http.ResponseWriter, *http.Request){unavailable, streamOf(": nothing\n\n"), unavailable},
			want:    []span{{50 * ms, 100 * ms}, {100 * ms, 200 * ms}, {200 * ms, 400 * ms}}},
		{name: "StartsFromTheRetryHint", min: 100 * ms, max: 10 * time.Second,
			scripts: []func(http.ResponseWriter, *http.Request){streamOf("retry: 3000\n\n"), unavailable},
			want:    []span{{1500 * ms, 3000 * ms}, {3000 * ms, 6000 * ms}}},
		{name: "RetryHintAboveMaxBackoff", min: 100 * ms, max: 400 * ms,
			scripts: []func(http.ResponseWriter, *http.Request){streamOf("retry: 3000\n\n"), unavailable},
			want:    []span{{1500 * ms, 3000 * ms}, {1500 * ms, 3000 * ms}}},
		{name: "HonoursRetryAfter", min: 100 * ms, max: 400 * ms,
			scripts: []func(http.ResponseWriter, *http.Request){failWith(503, `{"error":"busy"}`, "Retry-After", "2"), unavailable},
			want:    []span{{2000 * ms, 3000 * ms}, {100 * ms, 200 * ms}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), time.Hour) // of the bubble's time: a failure ends
				defer cancel()
				// The last request ends the follow.
				srv := newScriptServer(append(tt.scripts, func(http.ResponseWriter, *http.Request) { cancel() })...)
				c := newBubbleClient(t, srv, 0, &httpapi.ClientOptions{MinBackoff: tt.min, MaxBackoff: tt.max})
				got, err := clientFollow(t, ctx, c, eventagg.Query{}, 0)
				if err != nil {
					t.Fatalf("Follow() ended with %v, want no error once its context ends", err)
				}
				if len(got) > 1 {
					t.Errorf("Follow() = %v", got)
				}
				reqs := srv.requests()
				if len(reqs) != len(tt.want)+1 {
					t.Fatalf("%d requests, want %d", len(reqs), len(tt.want)+1)
				}
				for i, w := range tt.want {
					if d := reqs[i+1].at.Sub(reqs[i].at); d < w.min || d > w.max {
						t.Errorf("request %d came %v after the previous one, want %v to %v", i+1, d, w.min, w.max)
					}
				}
			})
		})
	}
}

func TestClientFollowOutlivesTheHTTPTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var sent time.Time
		srv := newScriptServer(
			// Keep-alives every 15s keep the stream up past the HTTP
			// client's 30s Timeout; then silence for 30s breaks it.
			func(w http.ResponseWriter, r *http.Request) {
				sendSSE(w, "retry: 100\n\n")
				for range 6 {
					time.Sleep(15 * time.Second)
					sendSSE(w, ": keep-alive\n\n")
				}
				sent = time.Now()
				if sendSSE(w, sseFrame(1)) {
					<-r.Context().Done()
				}
			},
			// No answer at all: the wait for headers is bounded too.
			func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			holdAfter(sseFrame(2)),
		)
		var states stateLog
		// A consumer slower than the Timeout does not break the stream.
		slow := func(e eventagg.Event) { time.Sleep(45 * time.Second) }
		c := newBubbleClient(t, srv, 30*time.Second, &httpapi.ClientOptions{FollowState: states.record})
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour) // of the bubble's time: a failure ends
		defer cancel()
		var got []eventagg.Event
		for e, err := range c.Follow(ctx, eventagg.Query{}) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, e)
			if len(got) == 2 {
				break
			}
			slow(e)
		}
		if diff := cmp.Diff(seqEvents(1, 2), got); diff != "" {
			t.Errorf("Follow() mismatch (-want +got):\n%s", diff)
		}
		reqs := srv.requests()
		if len(reqs) != 3 {
			t.Fatalf("%d requests, want 3", len(reqs))
		}
		if d := reqs[1].at.Sub(sent); d < 75*time.Second+50*time.Millisecond || d > 75*time.Second+100*time.Millisecond {
			t.Errorf("the second request came %v after event 1, want the consumer's 45s, 30s of silence and the 50 to 100ms wait", d)
		}
		if d := reqs[2].at.Sub(reqs[1].at); d < 30*time.Second+100*time.Millisecond || d > 30*time.Second+200*time.Millisecond {
			t.Errorf("the third request came %v after the second, want 30s and the 100 to 200ms wait", d)
		}
		if reqs[1].lastEventID != "1" || reqs[2].lastEventID != "1" {
			t.Errorf("requests %+v, want Last-Event-ID 1 after event 1", reqs)
		}
		states.check(t, "", "nothing came from the server for 30s", "nothing came from the server for 30s", "")
	})
}

func TestClientFollowsTheServerAcrossARestart(t *testing.T) {
	t.Parallel()
	// Two Aggregators in turn on one store, each served by its Handler at
	// the same address: a server that restarts.
	store := eventagg.NewMemoryStore()
	t.Cleanup(func() { store.Close() })
	var (
		current atomic.Pointer[httpapi.Handler]
		mu      sync.Mutex
		lastIDs []string // of each follow request
	)
	start := func() *eventagg.Aggregator {
		agg, err := eventagg.New(store, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { agg.Close() })
		current.Store(httpapi.NewHandler(agg, nil))
		return agg
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("follow") {
			mu.Lock()
			lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
			mu.Unlock()
		}
		checkedHandler(t, current.Load()).ServeHTTP(w, r)
	}))
	defer ts.Close()
	first := start()
	var states stateLog
	c := newFollowClient(t, ts.URL, &httpapi.ClientOptions{FollowState: states.record})
	ctx, cancel := context.WithCancel(testTimeout(t))
	defer cancel()
	publish := func(keys ...string) { // topic/id
		t.Helper()
		var events []eventagg.Event
		for _, k := range keys {
			topic, id, _ := strings.Cut(k, "/")
			events = append(events, eventagg.Event{Topic: topic, EventID: id, Payload: []byte(`{"k":"` + k + `"}`)})
		}
		if _, err := c.Publish(ctx, events...); err != nil {
			t.Fatal(err)
		}
	}
	publish("t/1", "u/1", "t/2", "t/3")

	got := make(chan eventagg.Event, 100)
	done := make(chan error, 1)
	go func() {
		for e, err := range c.Follow(ctx, eventagg.Query{Topic: "t"}) {
			if err != nil {
				done <- err
				return
			}
			got <- e
		}
		done <- nil
	}()
	var seen []eventagg.Event
	receive := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			select {
			case e := <-got:
				seen = append(seen, e)
				if e.Topic != "t" || e.EventID != id || string(e.Payload) != `{"k":"t/`+id+`"}` {
					t.Fatalf("Follow() yielded %+v, want t/%s", e, id)
				}
			case err := <-done:
				t.Fatalf("Follow() ended with %v, want t/%s", err, id)
			case <-ctx.Done():
				t.Fatalf("no t/%s from Follow()", id)
			}
		}
	}
	receive("1", "2", "3")
	publish("u/2", "t/4") // after the follower caught up
	receive("4")

	// The first Aggregator shuts down, which ends the stream; the second
	// one serves the same store. t/3 again is a duplicate: no event.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	start()
	publish("t/3", "t/5")
	receive("5")
	publish("t/6")
	receive("6")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Follow() ended with %v, want no error once its context ended", err)
	}
	close(got)
	for e := range got {
		t.Errorf("Follow() also yielded %+v", e)
	}
	var seqs []int64
	for _, e := range seen {
		seqs = append(seqs, e.Seq)
	}
	if !slices.IsSorted(seqs) || len(slices.Compact(slices.Clone(seqs))) != len(seqs) || seqs[0] <= 0 {
		t.Errorf("seqs %v, want increasing", seqs)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lastIDs) < 2 || lastIDs[0] != "" || lastIDs[len(lastIDs)-1] != fmt.Sprint(seqs[3]) {
		t.Errorf("Last-Event-ID of the follow requests = %q, want none, then %d (t/4's seq)", lastIDs, seqs[3])
	}
	if errs := states.get(); len(errs) < 3 || errs[0] != nil || errs[1] == nil || errs[len(errs)-1] != nil {
		t.Errorf("FollowState calls = %v, want nil, the lost stream's error, maybe more errors, nil", errs)
	}
}

func TestClientFollowTheServerRefuses(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil, nil, &httpapi.Options{Token: "s3cret", TokenReads: true})
	ts := httptest.NewServer(checkedHandler(t, s.h))
	defer ts.Close()
	for _, token := range []string{"", "wrong"} {
		c := newFollowClient(t, ts.URL, &httpapi.ClientOptions{Token: token})
		got, err := clientFollow(t, testTimeout(t), c, eventagg.Query{}, 0)
		var apiErr *httpapi.APIError
		if len(got) != 0 || !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || apiErr.Code != httpapi.CodeUnauthorized {
			t.Errorf("Follow() with token %q = %v, %v; want a 401 APIError", token, got, err)
		}
	}
	c := newFollowClient(t, ts.URL, &httpapi.ClientOptions{Token: "s3cret"})
	publishN(t, s, "a", 3)
	got, err := clientFollow(t, testTimeout(t), c, eventagg.Query{Topic: "a", After: 1}, 2)
	if err != nil || len(got) != 2 || got[0].Seq != 2 || got[1].Seq != 3 {
		t.Errorf("Follow(After: 1) with the token = %+v, %v; want seqs 2 and 3", got, err)
	}
}

// Follow reads the events as the server stores them. To resume later,
// keep the Seq of the last event seen and pass it as After.
func ExampleClient_Follow() {
	agg, err := eventagg.New(eventagg.NewMemoryStore(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()
	h := httpapi.NewHandler(agg, nil)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.RegisterOnShutdown(h.CloseFollows)
	srv.Start()
	defer srv.Close()

	client, err := httpapi.NewClient(srv.URL, nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if _, err := client.Publish(ctx, eventagg.Event{Topic: "orders", EventID: "o-1"}, eventagg.Event{Topic: "orders", EventID: "o-2"}); err != nil {
		log.Fatal(err)
	}
	for e, err := range client.Follow(ctx, eventagg.Query{Topic: "orders", Limit: 3}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Seq, e.Topic, e.EventID)
		if e.EventID == "o-2" { // caught up: publish one more
			if _, err := client.Publish(ctx, eventagg.Event{Topic: "orders", EventID: "o-3"}); err != nil {
				log.Fatal(err)
			}
		}
	}
	// Output:
	// 1 orders o-1
	// 2 orders o-2
	// 3 orders o-3
}
