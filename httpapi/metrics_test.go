package httpapi_test

import (
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
