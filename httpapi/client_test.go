package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/google/go-cmp/cmp"
)

// inProcess is an http.RoundTripper that serves requests with a handler in
// the same process, so client tests can run inside a synctest bubble. Before
// the handler, fail may answer a request itself (or fail it) instead.
type inProcess struct {
	h        http.Handler
	attempts atomic.Int32
	fail     func(attempt int) (*http.Response, error) // nil, nil: pass to h
}

func (p *inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	n := int(p.attempts.Add(1))
	if p.fail != nil {
		if resp, err := p.fail(n); resp != nil || err != nil {
			return resp, err
		}
	}
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}

// answer builds a response with status, JSON body and headers.
func answer(status int, body string, header ...string) *http.Response {
	rec := httptest.NewRecorder()
	for i := 0; i+1 < len(header); i += 2 {
		rec.Header().Set(header[i], header[i+1])
	}
	rec.WriteHeader(status)
	rec.WriteString(body)
	return rec.Result()
}

func newClient(t *testing.T, tr *inProcess, opts *httpapi.ClientOptions) *httpapi.Client {
	t.Helper()
	if opts == nil {
		opts = &httpapi.ClientOptions{}
	}
	if tr.h != nil {
		tr.h = checkedHandler(t, tr.h) // every exchange checked against openapi.json
	}
	opts.HTTPClient = &http.Client{Transport: tr}
	c, err := httpapi.NewClient("http://eventagg.test/", opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ev(id string) eventagg.Event { return eventagg.Event{Topic: "t", EventID: id} }

func TestClientRetriesNetworkErrorsAndServerErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t, nil, nil, nil)
		tr := &inProcess{h: s.h, fail: func(n int) (*http.Response, error) {
			switch n {
			case 1:
				return nil, errors.New("connection reset by peer")
			case 2:
				return answer(502, "bad gateway"), nil
			case 3:
				return answer(429, `{"error":"slow down"}`), nil
			}
			return nil, nil
		}}
		c := newClient(t, tr, &httpapi.ClientOptions{MinBackoff: time.Second, MaxBackoff: 10 * time.Second})
		start := time.Now()
		res, err := c.Publish(t.Context(), ev("1"), ev("2"))
		if err != nil {
			t.Fatalf("Publish() error: %v", err)
		}
		if res.Processed != 2 || tr.attempts.Load() != 4 {
			t.Errorf("Publish() = %+v after %d attempts, want 2 processed after 4", res, tr.attempts.Load())
		}
		// Backoff before retries 1, 2, 3: steps of 1s, 2s, 4s, each between half and all of it.
		if waited := time.Since(start); waited < 3500*time.Millisecond || waited > 7*time.Second {
			t.Errorf("retries waited %v in all, want between 3.5s and 7s", waited)
		}
	})
}

func TestClientHonoursRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t, nil, nil, nil)
		tr := &inProcess{h: s.h, fail: func(n int) (*http.Response, error) {
			if n == 1 {
				return answer(503, `{"error":"busy"}`, "Retry-After", "3"), nil
			}
			return nil, nil
		}}
		c := newClient(t, tr, &httpapi.ClientOptions{MinBackoff: time.Millisecond})
		start := time.Now()
		if _, err := c.Publish(t.Context(), ev("1")); err != nil {
			t.Fatalf("Publish() error: %v", err)
		}
		if waited := time.Since(start); waited != 3*time.Second {
			t.Errorf("waited %v before retrying, want Retry-After's 3s", waited)
		}
	})
}

func TestClientDoesNotRetryClientErrors(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	tr := &inProcess{h: s.h}
	c := newClient(t, tr, nil)
	_, err := c.Publish(t.Context(), ev("1"), eventagg.Event{Topic: "t"})
	var apiErr *httpapi.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("Publish() error = %v, want an *APIError", err)
	}
	if apiErr.StatusCode != 400 || apiErr.Index == nil || *apiErr.Index != 1 || apiErr.Field != "event_id" || apiErr.Temporary() {
		t.Errorf("APIError = %+v, want 400 for event 1, field event_id, not temporary", apiErr)
	}
	if n := tr.attempts.Load(); n != 1 {
		t.Errorf("%d attempts, want 1: a 400 is not retried", n)
	}
}

func TestClientGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &inProcess{fail: func(int) (*http.Response, error) { return answer(500, `{"error":"internal error"}`), nil }}
		c := newClient(t, tr, &httpapi.ClientOptions{MaxAttempts: 3})
		_, err := c.Publish(t.Context(), ev("1"))
		var apiErr *httpapi.APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 500 {
			t.Errorf("Publish() error = %v, want the last *APIError (500)", err)
		}
		if n := tr.attempts.Load(); n != 3 {
			t.Errorf("%d attempts, want MaxAttempts (3)", n)
		}
	})
}

func TestClientStopsWhenContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &inProcess{fail: func(int) (*http.Response, error) { return answer(503, `{}`, "Retry-After", "30"), nil }}
		c := newClient(t, tr, nil)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := c.Publish(ctx, ev("1"))
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 5*time.Second {
			t.Errorf("Publish() = %v after %v, want DeadlineExceeded after 5s", err, time.Since(start))
		}
	})
}

func TestClientResendIsDeduplicated(t *testing.T) {
	// The first attempt is stored, but its answer is lost: the retry reports
	// duplicates, and nothing is stored twice.
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t, nil, nil, nil)
		tr := &inProcess{h: s.h}
		tr.fail = func(n int) (*http.Response, error) {
			if n == 1 {
				req := httptest.NewRequestWithContext(t.Context(), "POST", "/publish",
					strings.NewReader(`[{"topic":"t","event_id":"1"},{"topic":"t","event_id":"2"}]`))
				s.h.ServeHTTP(httptest.NewRecorder(), req)
				return nil, errors.New("EOF")
			}
			return nil, nil
		}
		c := newClient(t, tr, nil)
		res, err := c.Publish(t.Context(), ev("1"), ev("2"))
		if err != nil {
			t.Fatal(err)
		}
		want := eventagg.Result{Duplicates: 2, Outcomes: []eventagg.Outcome{{Status: eventagg.Duplicate}, {Status: eventagg.Duplicate}}}
		if diff := cmp.Diff(want, res); diff != "" {
			t.Errorf("retried Publish mismatch (-want +got):\n%s", diff)
		}
		if st := s.stats(t); st.UniqueProcessed != 2 || st.Received != 4 {
			t.Errorf("Stats() = %+v, want 2 stored of 4 received", st.Counts)
		}
	})
}

func TestClientEventsAndStats(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	publishN(t, s, "a", 2500)
	publishN(t, s, "b", 3)
	c := newClient(t, &inProcess{h: s.h}, nil)
	var got []string
	for e, err := range c.Events(t.Context(), eventagg.Query{Topic: "a"}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e.EventID)
	}
	if len(got) != 2500 || got[0] != "0" || got[2499] != "2499" {
		t.Errorf("Events(topic=a) returned %d events (%v...), want 0..2499", len(got), got[:min(len(got), 3)])
	}
	n := 0
	for _, err := range c.Events(t.Context(), eventagg.Query{After: 10, Limit: 1200}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1200 {
		t.Errorf("Events(limit=1200) returned %d events", n)
	}
	st, err := c.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.UniqueProcessed != 2503 || st.Topics["b"].Received != 3 {
		t.Errorf("Stats() = %+v", st)
	}
	if err := c.Health(t.Context()); err != nil {
		t.Errorf("Health() error: %v", err)
	}
}

func TestNewClientRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "localhost:8080", "ftp://x", "http://", "://"} {
		if _, err := httpapi.NewClient(u, nil); err == nil {
			t.Errorf("NewClient(%q) error = nil", u)
		}
	}
}

func TestClientKeepsPathPrefix(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	mux := http.NewServeMux()
	mux.Handle("/eventagg/", http.StripPrefix("/eventagg", checkedHandler(t, s.h)))
	c, err := httpapi.NewClient("http://x/eventagg", &httpapi.ClientOptions{HTTPClient: &http.Client{Transport: &inProcess{h: mux}}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.Publish(t.Context(), ev(strconv.Itoa(1))); err != nil || res.Processed != 1 {
		t.Errorf("Publish() through a prefix = %+v, %v", res, err)
	}
}

// A Client publishes as an Aggregator does.
var _ eventagg.Publisher = (*httpapi.Client)(nil)

// libraryErrors are the errors of package eventagg that answers map to.
var libraryErrors = map[string]error{
	"ErrInvalidEvent": eventagg.ErrInvalidEvent,
	"ErrConflict":     eventagg.ErrConflict,
	"ErrQueueFull":    eventagg.ErrQueueFull,
	"ErrClosed":       eventagg.ErrClosed,
	"ErrStore":        eventagg.ErrStore,
	"ErrFull":         eventagg.ErrFull,
	"ErrDamaged":      eventagg.ErrDamaged,
}

// TestClientErrorsMatchTheLibrary answers a publish with each kind of error:
// the Client's error matches exactly the library's errors it stands for,
// by its code or, without one, by its status.
func TestClientErrorsMatchTheLibrary(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		is       []string // the libraryErrors that errors.Is matches; no other
		valErr   *eventagg.ValidationError
		conflict *eventagg.ConflictError
	}{
		{"InvalidEvent", 400, `{"error":"eventagg: event 1: event_id: is required","code":"invalid_event","index":1,"field":"event_id"}`,
			[]string{"ErrInvalidEvent"}, &eventagg.ValidationError{Index: 1, Field: "event_id", Reason: "is required"}, nil},
		{"InvalidEventFromTheDecoder", 400, `{"error":"event 0: field \"topic\" must be a string, not a JSON number","code":"invalid_event","index":0,"field":"topic"}`,
			[]string{"ErrInvalidEvent"}, &eventagg.ValidationError{Index: 0, Field: "topic", Reason: `field "topic" must be a string, not a JSON number`}, nil},
		{"InvalidEventWithoutCode", 400, `{"error":"eventagg: event 1: topic: is required","index":1,"field":"topic"}`,
			[]string{"ErrInvalidEvent"}, &eventagg.ValidationError{Index: 1, Field: "topic", Reason: "is required"}, nil},
		{"InvalidEventWithUnknownCode", 400, `{"error":"eventagg: event 1: topic: is required","code":"from_the_future","index":1,"field":"topic"}`,
			[]string{"ErrInvalidEvent"}, &eventagg.ValidationError{Index: 1, Field: "topic", Reason: "is required"}, nil},
		{"Malformed", 400, `{"error":"malformed JSON at byte 40: unexpected end","code":"bad_request","index":1}`, nil, nil, nil},
		{"MalformedWithoutCode", 400, `{"error":"malformed JSON at byte 40: unexpected end","index":1}`, nil, nil, nil},
		{"Conflict", 409, `{"error":"eventagg: event 1: payload: differs","code":"conflict","index":1,"field":"payload"}`,
			[]string{"ErrConflict"}, nil, &eventagg.ConflictError{Index: 1, Key: eventagg.Key{Topic: "t", EventID: "2"}}},
		{"ConflictWithoutCode", 409, `{"error":"differs","index":0,"field":"payload"}`,
			[]string{"ErrConflict"}, nil, &eventagg.ConflictError{Index: 0, Key: eventagg.Key{Topic: "t", EventID: "1"}}},
		{"QueueFull", 503, `{"error":"server busy","code":"queue_full"}`, []string{"ErrQueueFull"}, nil, nil},
		{"ShuttingDown", 503, `{"error":"server shutting down","code":"shutting_down"}`, []string{"ErrClosed"}, nil, nil},
		{"StoreUnavailable", 503, `{"error":"store unavailable","code":"store_unavailable"}`, []string{"ErrStore"}, nil, nil},
		{"StoreFull", 503, `{"error":"no space left","code":"store_full"}`, []string{"ErrStore", "ErrFull"}, nil, nil},
		{"StoreDamaged", 503, `{"error":"damaged","code":"store_damaged"}`, []string{"ErrStore", "ErrDamaged"}, nil, nil},
		{"ServiceUnavailableWithoutCode", 503, `{"error":"busy"}`, nil, nil, nil},
		{"TooManyListings", 503, `{"error":"too many listings","code":"too_many_listings"}`, nil, nil, nil},
		{"Proxy", 502, `<html>bad gateway</html>`, nil, nil, nil},
		{"Unauthorized", 401, `{"error":"this endpoint needs a bearer token","code":"unauthorized"}`, nil, nil, nil},
		{"TooLarge", 413, `{"error":"batch is over the limit of 3 events","code":"too_large"}`, nil, nil, nil},
		{"Internal", 500, `{"error":"internal error","code":"internal"}`, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := &inProcess{fail: func(int) (*http.Response, error) { return answer(tt.status, tt.body), nil }}
			c := newClient(t, tr, &httpapi.ClientOptions{MaxAttempts: 1})
			_, err := c.Publish(t.Context(), ev("1"), ev("2"))
			var apiErr *httpapi.APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tt.status {
				t.Fatalf("Publish() error = %v, want an *APIError with status %d", err, tt.status)
			}
			for name, target := range libraryErrors {
				if want := slices.Contains(tt.is, name); errors.Is(err, target) != want {
					t.Errorf("errors.Is(%v, eventagg.%s) = %v, want %v", err, name, !want, want)
				}
			}
			var valErr *eventagg.ValidationError
			if errors.As(err, &valErr) != (tt.valErr != nil) {
				t.Errorf("errors.As(%v, *ValidationError) = %v, want %v", err, valErr != nil, tt.valErr != nil)
			} else if diff := cmp.Diff(tt.valErr, valErr); diff != "" {
				t.Errorf("ValidationError mismatch (-want +got):\n%s", diff)
			}
			var conflict *eventagg.ConflictError
			if errors.As(err, &conflict) != (tt.conflict != nil) {
				t.Errorf("errors.As(%v, *ConflictError) = %v, want %v", err, conflict != nil, tt.conflict != nil)
			} else if diff := cmp.Diff(tt.conflict, conflict); diff != "" {
				t.Errorf("ConflictError mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClientPublishIsAggregatorPublish publishes the same batches to an
// Aggregator in process and, through a Client, to one behind a Handler:
// the Results are the same but for Seq, which the server does not send,
// and so are the errors, conflicts included, dropped or rejected.
func TestClientPublishIsAggregatorPublish(t *testing.T) {
	p := func(topic, id, payload string) eventagg.Event {
		e := eventagg.Event{Topic: topic, EventID: id, Source: "test"}
		if payload != "" {
			e.Payload = json.RawMessage(payload)
		}
		return e
	}
	batches := [][]eventagg.Event{
		{p("a", "1", `{"v":1}`), p("a", "2", `{"v":1}`), p("a", "1", `{"v":1}`), p("b", "1", "")},
		{p("a", "1", `{"v":1}`), p("a", "2", `{"v":2}`), p("c", "1", `[1]`), p("c", "1", `[ 1 ]`)}, // conflicts, across and within
		{p("b", "1", ""), p("b", "1", `null`)},                                                     // no payload and null differ
		{},
		{p("d", "1", `{"v":1}`), {Topic: "d"}},                 // invalid: no event_id
		{p("d", "2", `{"v":1}`), p("d", "3", `{"k":1,"k":2}`)}, // invalid: not I-JSON
		{p("d", "4", `{"v":1}`), p("d", "5", `"`+strings.Repeat("x", 300)+`"`), {Topic: "d", EventID: "   "}}, // invalid: blank id
	}
	for _, reject := range []bool{false, true} {
		t.Run(fmt.Sprintf("RejectConflicts=%v", reject), func(t *testing.T) {
			t.Parallel()
			opts := &eventagg.Options{RejectConflicts: reject}
			local, err := eventagg.New(eventagg.NewMemoryStore(), opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { local.Close() })
			s := newServer(t, nil, opts, nil)
			remote := newClient(t, &inProcess{h: s.h}, &httpapi.ClientOptions{MaxAttempts: 1})
			for i, batch := range batches {
				want, wantErr := local.Publish(t.Context(), batch...)
				got, gotErr := remote.Publish(t.Context(), batch...)
				for j := range want.Outcomes {
					want.Outcomes[j].Seq = 0
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("batch %d: Result mismatch (-aggregator +client):\n%s", i, diff)
				}
				if (wantErr == nil) != (gotErr == nil) {
					t.Fatalf("batch %d: the Aggregator returned %v, the Client %v", i, wantErr, gotErr)
				}
				for name, target := range libraryErrors {
					if errors.Is(wantErr, target) != errors.Is(gotErr, target) {
						t.Errorf("batch %d: errors.Is(_, %s): %v for the Aggregator's %v, %v for the Client's %v",
							i, name, errors.Is(wantErr, target), wantErr, errors.Is(gotErr, target), gotErr)
					}
				}
				var wantVal, gotVal *eventagg.ValidationError
				if errors.As(wantErr, &wantVal) && (!errors.As(gotErr, &gotVal) || *wantVal != *gotVal) {
					t.Errorf("batch %d: the Aggregator's %#v, the Client's %#v", i, wantVal, gotVal)
				}
				var wantConflict, gotConflict *eventagg.ConflictError
				if errors.As(wantErr, &wantConflict) && (!errors.As(gotErr, &gotConflict) || *wantConflict != *gotConflict) {
					t.Errorf("batch %d: the Aggregator's %#v, the Client's %#v", i, wantConflict, gotConflict)
				}
			}
			want, err := local.Stats(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want.Topics, s.stats(t).Topics); diff != "" {
				t.Errorf("counters mismatch (-aggregator +server):\n%s", diff)
			}
			if !reject && want.Conflicts != 3 {
				t.Errorf("Stats().Conflicts = %d, want the 3 conflicts published", want.Conflicts)
			}
		})
	}
}

func TestClientBoundsAnswers(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("x", 70<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stats" {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"received":1,"x":"`+huge+`"}`)
			return
		}
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"bad`+huge+`"}`)
	}))
	t.Cleanup(srv.Close)
	c, err := httpapi.NewClient(srv.URL, &httpapi.ClientOptions{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stats(t.Context()); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Stats with a 70 MiB answer: %v, want an error saying it is too large", err)
	}
	_, err = c.Publish(t.Context(), eventagg.Event{Topic: "a", EventID: "1"})
	var apiErr *httpapi.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || len(apiErr.Message) > 64<<10 {
		t.Errorf("Publish with a 70 MiB error answer: %v, want a 400 APIError with a bounded message", err)
	}
}
