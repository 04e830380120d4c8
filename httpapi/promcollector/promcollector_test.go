package promcollector_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/eventagg/eventagg/httpapi/promcollector"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// newHandler returns a Handler over an Aggregator on store (a MemoryStore
// if nil) whose clock stands still, so that two reads of its metrics
// agree on the uptime and every latency is zero.
func newHandler(t *testing.T, store eventagg.Store) *httpapi.Handler {
	t.Helper()
	if store == nil {
		store = eventagg.NewMemoryStore()
	}
	agg, err := eventagg.New(store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agg.Close(); store.Close() })
	now := time.Now()
	return httpapi.NewHandler(agg, &httpapi.Options{Now: func() time.Time { return now }})
}

// do sends a request to h and returns the status and body.
func do(t *testing.T, h http.Handler, method, target, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, target, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// publishSome publishes 3 events of which one is a duplicate and one a
// conflict, and one invalid batch.
func publishSome(t *testing.T, h http.Handler) {
	t.Helper()
	for _, tt := range []struct {
		body   string
		status int
	}{
		{`[{"topic":"a","event_id":"1"},{"topic":"a","event_id":"1"},{"topic":"b","event_id":"1"}]`, 200},
		{`{"topic":"a","event_id":"2","payload":1}`, 200},
		{`{"topic":"a","event_id":"2","payload":2}`, 200},
		{`{"topic":""}`, 400},
	} {
		if status, body := do(t, h, "POST", "/publish", tt.body); status != tt.status {
			t.Fatalf("POST /publish %s = %d %s, want %d", tt.body, status, body, tt.status)
		}
	}
}

// TestCollectorMatchesMetricsEndpoint: what the collector yields is what
// GET /metrics served, every family and sample, plus the count of that
// GET /metrics itself.
func TestCollectorMatchesMetricsEndpoint(t *testing.T) {
	h := newHandler(t, nil)
	publishSome(t, h)
	status, text := do(t, h, "GET", "/metrics", "")
	if status != 200 {
		t.Fatalf("GET /metrics = %d %s", status, text)
	}
	const header = "# TYPE eventagg_http_requests_total counter\n"
	if !strings.Contains(text, header) {
		t.Fatalf("GET /metrics lacks %q:\n%s", header, text)
	}
	want := strings.Replace(text, header, header+`eventagg_http_requests_total{handler="metrics",code="200"} 1`+"\n", 1)
	// client_golang writes labels in the order of their names, which
	// Prometheus gives no meaning: write the handler's in that order too.
	want = regexp.MustCompile(`\{handler="([^"]*)",code="([^"]*)"\}`).ReplaceAllString(want, `{code="$2",handler="$1"}`)
	if err := testutil.CollectAndCompare(promcollector.New(h, nil), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// TestCollectAndCompare checks the values after some publishes, with
// constant labels.
func TestCollectAndCompare(t *testing.T) {
	h := newHandler(t, nil)
	publishSome(t, h)
	c := promcollector.New(h, &promcollector.Options{ConstLabels: prometheus.Labels{"store": "orders"}})
	const want = `
# HELP eventagg_events_received_total Events offered in accepted batches.
# TYPE eventagg_events_received_total counter
eventagg_events_received_total{store="orders"} 5
# HELP eventagg_events_unique_total Events stored.
# TYPE eventagg_events_unique_total counter
eventagg_events_unique_total{store="orders"} 3
# HELP eventagg_events_duplicate_total Events dropped as duplicates, conflicts included.
# TYPE eventagg_events_duplicate_total counter
eventagg_events_duplicate_total{store="orders"} 2
# HELP eventagg_events_conflict_total Duplicates dropped whose payload differed from the stored copy's.
# TYPE eventagg_events_conflict_total counter
eventagg_events_conflict_total{store="orders"} 1
# HELP eventagg_topics Topics that have received an event.
# TYPE eventagg_topics gauge
eventagg_topics{store="orders"} 2
# HELP eventagg_publish_rejected_total Publish requests this process rejected as malformed, invalid, too large or conflicting.
# TYPE eventagg_publish_rejected_total counter
eventagg_publish_rejected_total{store="orders"} 1
# HELP eventagg_http_requests_total HTTP requests answered, by handler and status code.
# TYPE eventagg_http_requests_total counter
eventagg_http_requests_total{code="200",handler="publish",store="orders"} 3
eventagg_http_requests_total{code="400",handler="publish",store="orders"} 1
# HELP eventagg_publish_duration_seconds Time to answer POST /publish, from request to response.
# TYPE eventagg_publish_duration_seconds histogram
eventagg_publish_duration_seconds_bucket{store="orders",le="0.001"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="0.0025"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="0.005"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="0.01"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="0.025"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="0.05"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="0.1"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="0.25"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="0.5"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="1"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="2.5"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="5"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="10"} 4
eventagg_publish_duration_seconds_bucket{store="orders",le="+Inf"} 4
eventagg_publish_duration_seconds_sum{store="orders"} 0
eventagg_publish_duration_seconds_count{store="orders"} 4
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"eventagg_events_received_total", "eventagg_events_unique_total", "eventagg_events_duplicate_total",
		"eventagg_events_conflict_total", "eventagg_topics", "eventagg_publish_rejected_total",
		"eventagg_http_requests_total", "eventagg_publish_duration_seconds"); err != nil {
		t.Error(err)
	}
	// Each Collect reads afresh.
	publishSome(t, h)
	if got := testutil.CollectAndCount(c); got == 0 {
		t.Fatal("nothing collected")
	}
	const again = `
# HELP eventagg_events_received_total Events offered in accepted batches.
# TYPE eventagg_events_received_total counter
eventagg_events_received_total{store="orders"} 10
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(again), "eventagg_events_received_total"); err != nil {
		t.Error(err)
	}
}

// TestGatherAndLint lints every metric, the SQLite store's own included,
// in a registry beside the Go and process collectors.
func TestGatherAndLint(t *testing.T) {
	store, err := eventagg.OpenSQLite(filepath.Join(t.TempDir(), "events.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := newHandler(t, store)
	publishSome(t, h)
	if _, err := h.Metrics(t.Context()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(promcollector.New(h, nil))
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if n, err := testutil.GatherAndCount(reg, "eventagg_sqlite_wal_bytes", "eventagg_sqlite_damaged"); err != nil || n != 2 {
		t.Errorf("the SQLite store's metrics: %d gathered (%v), want 2", n, err)
	}
}

// failingStore fails every read of the totals; writes work.
type failingStore struct{ eventagg.Store }

var errDiskGone = errors.New("disk gone")

func (failingStore) Stats(context.Context) (eventagg.Stats, error) {
	return eventagg.Stats{}, errDiskGone
}

// TestStoreThatCannotBeRead: the scrape succeeds without the event
// counters, and OnError hears why.
func TestStoreThatCannotBeRead(t *testing.T) {
	h := newHandler(t, failingStore{eventagg.NewMemoryStore()})
	publishSome(t, h)
	var errs atomic.Int64
	reg := prometheus.NewRegistry()
	reg.MustRegister(promcollector.New(h, &promcollector.Options{OnError: func(err error) {
		if !errors.Is(err, eventagg.ErrStore) {
			t.Errorf("OnError(%v): want an error matching eventagg.ErrStore", err)
		}
		errs.Add(1)
	}}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v; want the rest of the metrics", err)
	}
	if errs.Load() != 1 {
		t.Errorf("OnError called %d times, want 1", errs.Load())
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
		if strings.HasPrefix(mf.GetName(), "eventagg_events_") {
			t.Errorf("gathered %s from a store that cannot be read", mf.GetName())
		}
	}
	if !strings.Contains(strings.Join(names, " "), "eventagg_publish_rejected_total") {
		t.Errorf("gathered %v; want what the handler counts itself", names)
	}
}

// TestTwoHandlersInOneRegistry: two handlers' collectors go in one
// registry with different constant labels; with the same, every Gather
// fails rather than mixing them.
func TestTwoHandlersInOneRegistry(t *testing.T) {
	a, b := newHandler(t, nil), newHandler(t, nil)
	publishSome(t, a)
	reg := prometheus.NewRegistry()
	reg.MustRegister(promcollector.New(a, &promcollector.Options{ConstLabels: prometheus.Labels{"store": "a"}}))
	reg.MustRegister(promcollector.New(b, &promcollector.Options{ConstLabels: prometheus.Labels{"store": "b"}}))
	const want = `
# HELP eventagg_events_unique_total Events stored.
# TYPE eventagg_events_unique_total counter
eventagg_events_unique_total{store="a"} 3
eventagg_events_unique_total{store="b"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "eventagg_events_unique_total"); err != nil {
		t.Error(err)
	}

	clash := prometheus.NewRegistry()
	clash.MustRegister(promcollector.New(a, nil), promcollector.New(b, nil))
	if _, err := clash.Gather(); err == nil || !strings.Contains(err.Error(), "eventagg_") {
		t.Errorf("Gather() of two handlers without labels to tell them apart = %v, want a duplicate metric error", err)
	}
}

// badSource yields a metric whose label value Prometheus does not allow.
type badSource struct{}

func (badSource) Metrics(context.Context) ([]httpapi.Metric, error) {
	return []httpapi.Metric{{Name: "eventagg_bad", Help: "x", Type: httpapi.MetricGauge,
		Samples: []httpapi.Sample{{Labels: []httpapi.Label{{Name: "l", Value: "\xff"}}, Value: 1}}}}, nil
}

func TestInvalidMetricFailsTheGather(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(promcollector.New(badSource{}, nil))
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "eventagg_bad") {
		t.Errorf("Gather() = %v, want an error naming the invalid metric", err)
	}
}

// slowSource waits for its context to end.
type slowSource struct{ deadline atomic.Bool }

func (s *slowSource) Metrics(ctx context.Context) ([]httpapi.Metric, error) {
	_, ok := ctx.Deadline()
	s.deadline.Store(ok)
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestCollectIsBounded: a store that does not answer holds a scrape for
// Timeout, not forever.
func TestCollectIsBounded(t *testing.T) {
	src := &slowSource{}
	var got error
	c := promcollector.New(src, &promcollector.Options{Timeout: 10 * time.Millisecond, OnError: func(err error) { got = err }})
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Errorf("collected %d metrics from a source that gave none", n)
	}
	if !src.deadline.Load() || !errors.Is(got, context.DeadlineExceeded) {
		t.Errorf("Metrics() had a deadline: %v; OnError(%v); want a deadline and DeadlineExceeded", src.deadline.Load(), got)
	}
}

// TestRootAndHTTPAPIDoNotImportPrometheus: only this package (and the
// reference server) pays for client_golang.
func TestRootAndHTTPAPIDoNotImportPrometheus(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to list dependencies: %v", err)
	}
	for _, pkg := range []string{"github.com/eventagg/eventagg", "github.com/eventagg/eventagg/httpapi"} {
		out, err := exec.CommandContext(t.Context(), goTool, "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.HasPrefix(dep, "github.com/prometheus/") {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
		if !strings.Contains(string(out), pkg) {
			t.Errorf("go list -deps %s does not list it: %q", pkg, out)
		}
	}
}
