package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
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
		if diff := cmp.Diff(httpapi.PublishResponse{Duplicates: 2}, res); diff != "" {
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
	mux.Handle("/eventagg/", http.StripPrefix("/eventagg", s.h))
	c, err := httpapi.NewClient("http://x/eventagg", &httpapi.ClientOptions{HTTPClient: &http.Client{Transport: &inProcess{h: mux}}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.Publish(t.Context(), ev(strconv.Itoa(1))); err != nil || res.Processed != 1 {
		t.Errorf("Publish() through a prefix = %+v, %v", res, err)
	}
}
