package httpapi_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ with what the code produces")

// stepClock is a clock that moves on at every reading, by step more each
// time, so that latencies differ (and fall in several buckets) and are the
// same in every run.
type stepClock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
	n    int
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	c.now = c.now.Add(time.Duration(c.n) * c.step)
	return c.now
}

// fixedBackend is an Aggregator with a fixed start time and store metrics
// of its own, so that every line of /metrics is known in advance.
type fixedBackend struct {
	*eventagg.Aggregator
	started time.Time
}

func (b fixedBackend) StartedAt() time.Time { return b.started }

func (b fixedBackend) StoreMetrics() []eventagg.StoreMetric {
	return []eventagg.StoreMetric{
		{Name: "eventagg_test_store_bytes", Type: "gauge", Help: "A store's gauge.", Value: 4096},
		{Name: "eventagg_test_store_flushes_total", Type: "counter", Help: "A store's counter.", Value: 3},
	}
}

// metricsServer serves store through a fixedBackend on a stepClock and
// makes the same requests every time: publishes (stored, duplicate,
// conflict, invalid, too large), a claim if the store takes claims, a 404 and a 405.
func metricsServer(t *testing.T, store eventagg.Store) *server {
	t.Helper()
	s := newServer(t, store, nil, nil)
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	clock := &stepClock{now: start, step: time.Millisecond}
	s.h = httpapi.NewHandler(fixedBackend{s.agg, start.Add(-90 * time.Second)}, &httpapi.Options{MaxBodyBytes: 1024, Now: clock.Now})
	for _, body := range []string{
		`[{"topic":"a","event_id":"1"},{"topic":"a","event_id":"1"},{"topic":"b","event_id":"1"}]`,
		`{"topic":"a","event_id":"2"}`,
		`{"topic":"a","event_id":"2","payload":2}`,
		`{"topic":""}`,
		"[" + strings.Repeat(" ", 2000) + "]",
	} {
		s.do(t, "POST", "/publish", body)
	}
	if _, ok := s.store.(eventagg.Claimer); ok {
		if _, err := s.agg.Claim(t.Context(), eventagg.Key{Topic: "hooks", EventID: "d-1"}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	s.do(t, "GET", "/nope", "")
	s.do(t, "DELETE", "/stats", "")
	s.do(t, "GET", "/stats", "")
	return s
}

// TestMetricsExposition compares GET /metrics, byte for byte, with the
// golden files: the names, types, help, labels and order of the exposition
// are what scrapers and dashboards rely on. go test -run
// TestMetricsExposition -update rewrites them after an intended change.
func TestMetricsExposition(t *testing.T) {
	for _, tt := range []struct {
		name  string
		store eventagg.Store
	}{
		{"stored", nil},
		{"storefails", readFailStore{eventagg.NewMemoryStore()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := metricsServer(t, tt.store)
			resp := s.do(t, "GET", "/metrics", "")
			if resp.status != 200 {
				t.Fatalf("GET /metrics = %d %s", resp.status, resp.body)
			}
			golden := filepath.Join("testdata", "metrics", tt.name+".prom")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, resp.body, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), string(resp.body)); diff != "" {
				t.Errorf("GET /metrics mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHandlerMetrics reads the structured view that GET /metrics is
// written from: every name has the eventagg_ prefix and one of the three
// types, counters and gauges have samples and the histogram has its
// buckets; without the store's totals, the error says so and the event
// counters are left out.
func TestHandlerMetrics(t *testing.T) {
	s := metricsServer(t, nil)
	ms, err := s.h.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	byName := make(map[string]httpapi.Metric)
	for _, m := range ms {
		if !strings.HasPrefix(m.Name, "eventagg_") || m.Help == "" {
			t.Errorf("metric %q (help %q): want the eventagg_ prefix and a help", m.Name, m.Help)
		}
		if _, dup := byName[m.Name]; dup {
			t.Errorf("metric %s given twice", m.Name)
		}
		byName[m.Name] = m
		switch m.Type {
		case httpapi.MetricCounter, httpapi.MetricGauge:
			if m.Histogram != nil || (len(m.Samples) == 0 && m.Name != "eventagg_http_requests_total") {
				t.Errorf("%s %s = %+v: want samples and no histogram", m.Type, m.Name, m)
			}
		case httpapi.MetricHistogram:
			if m.Histogram == nil || len(m.Samples) != 0 {
				t.Errorf("histogram %s = %+v", m.Name, m)
			}
		default:
			t.Errorf("metric %s has type %q", m.Name, m.Type)
		}
	}
	if got := byName["eventagg_events_unique_total"].Samples; len(got) != 1 || got[0].Value != 3 {
		t.Errorf("eventagg_events_unique_total = %+v, want 3", got)
	}
	wantRequests := []httpapi.Sample{
		{Labels: []httpapi.Label{{"handler", "other"}, {"code", "404"}}, Value: 1},
		{Labels: []httpapi.Label{{"handler", "publish"}, {"code", "200"}}, Value: 3},
		{Labels: []httpapi.Label{{"handler", "publish"}, {"code", "400"}}, Value: 1},
		{Labels: []httpapi.Label{{"handler", "publish"}, {"code", "413"}}, Value: 1},
		{Labels: []httpapi.Label{{"handler", "stats"}, {"code", "200"}}, Value: 1},
		{Labels: []httpapi.Label{{"handler", "stats"}, {"code", "405"}}, Value: 1},
	}
	if diff := cmp.Diff(wantRequests, byName["eventagg_http_requests_total"].Samples); diff != "" {
		t.Errorf("eventagg_http_requests_total mismatch (-want +got):\n%s", diff)
	}
	// Five publishes that took 2, 4, 6, 8 and 10 ms by the step clock.
	hist := byName["eventagg_publish_duration_seconds"].Histogram
	if hist == nil || hist.Count != 5 || len(hist.Buckets) == 0 || hist.Buckets[len(hist.Buckets)-1].Count != 5 {
		t.Fatalf("eventagg_publish_duration_seconds = %+v, want 5 observations", hist)
	}
	for i := 1; i < len(hist.Buckets); i++ {
		if b, prev := hist.Buckets[i], hist.Buckets[i-1]; b.UpperBound <= prev.UpperBound || b.Count < prev.Count {
			t.Errorf("bucket %d %+v after %+v: want ascending bounds and cumulative counts", i, b, prev)
		}
	}

	failing := metricsServer(t, readFailStore{eventagg.NewMemoryStore()})
	ms, err = failing.h.Metrics(t.Context())
	if !errors.Is(err, eventagg.ErrStore) {
		t.Errorf("Metrics() of a failing store: error %v, want one matching eventagg.ErrStore", err)
	}
	for _, m := range ms {
		if strings.HasPrefix(m.Name, "eventagg_events_") || strings.HasPrefix(m.Name, "eventagg_claims_") {
			t.Errorf("Metrics() of a failing store holds %s", m.Name)
		}
	}
	if len(ms) == 0 {
		t.Error("Metrics() of a failing store returned nothing; want what the handler counts itself")
	}
}

// TestMetricsCountStatusPageAndOpenAPI: the status page's answers are
// counted under handler="status" (a GET / that is not for the page is an
// unknown path, "other"), and GET /openapi.json's under "openapi".
func TestMetricsCountStatusPageAndOpenAPI(t *testing.T) {
	s := newServer(t, nil, nil, &httpapi.Options{Token: "s3cret", TokenReads: true})
	auth := "Bearer s3cret"
	s.page(t, "Authorization", auth)                                                // status 200
	s.doWith(t, "HEAD", "/", "", "Accept", browserAccept, "Authorization", auth)    // status 200
	s.page(t)                                                                       // status 401
	s.doWith(t, "GET", "/?x=1", "", "Accept", browserAccept, "Authorization", auth) // status 400
	s.doWith(t, "GET", "/", "", "Accept", "application/json")                       // other 404
	s.doWith(t, "POST", "/", "", "Accept", browserAccept)                           // other 404
	s.do(t, "GET", "/openapi.json", "")                                             // openapi 200
	s.do(t, "GET", "/openapi.json?x=1", "")                                         // openapi 400
	s.do(t, "DELETE", "/openapi.json", "")                                          // openapi 405
	ms, err := s.h.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got []httpapi.Sample
	for _, m := range ms {
		if m.Name == "eventagg_http_requests_total" {
			got = m.Samples
		}
	}
	want := []httpapi.Sample{
		{Labels: []httpapi.Label{{"handler", "openapi"}, {"code", "200"}}, Value: 1},
		{Labels: []httpapi.Label{{"handler", "openapi"}, {"code", "400"}}, Value: 1},
		{Labels: []httpapi.Label{{"handler", "openapi"}, {"code", "405"}}, Value: 1},
		{Labels: []httpapi.Label{{"handler", "other"}, {"code", "404"}}, Value: 2},
		{Labels: []httpapi.Label{{"handler", "status"}, {"code", "200"}}, Value: 2},
		{Labels: []httpapi.Label{{"handler", "status"}, {"code", "400"}}, Value: 1},
		{Labels: []httpapi.Label{{"handler", "status"}, {"code", "401"}}, Value: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("eventagg_http_requests_total mismatch (-want +got):\n%s", diff)
	}
}
