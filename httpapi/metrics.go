package httpapi

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventagg/eventagg"
)

// MetricType is the type of a [Metric], as the Prometheus text format names it.
type MetricType string

// The types of a [Metric].
const (
	MetricCounter   MetricType = "counter"   // only grows (until the process or the store restarts)
	MetricGauge     MetricType = "gauge"     // goes up and down
	MetricHistogram MetricType = "histogram" // observations counted in buckets: see [HistogramValue]
)

// Metric is one metric family of GET /metrics: a name with the eventagg_
// prefix, its help and type, and its values. A counter or gauge has
// Samples; a histogram has Histogram instead.
type Metric struct {
	Name string
	Help string
	Type MetricType
	// Samples are the values of a counter or gauge: one without labels,
	// or one per set of label values (eventagg_http_requests_total has one
	// per handler and status code), in the order GET /metrics writes them.
	Samples []Sample
	// Histogram is the value of a histogram; nil for other types.
	Histogram *HistogramValue
}

// Sample is one value of a [Metric], with its labels (none for most).
type Sample struct {
	Labels []Label // in the order GET /metrics writes them
	Value  float64
}

// Label is a label's name and value, such as handler="publish".
type Label struct{ Name, Value string }

// HistogramValue is the value of a histogram [Metric], as Prometheus
// defines one: cumulative bucket counts, the count and the sum of the
// observations.
type HistogramValue struct {
	// Buckets have ascending upper bounds; the last bucket, +Inf, is
	// not among them: its count is Count.
	Buckets []Bucket
	Count   uint64
	Sum     float64
}

// Bucket is one bucket of a [HistogramValue].
type Bucket struct {
	UpperBound float64
	Count      uint64 // observations at most UpperBound: cumulative
}

// latencyBuckets are the upper bounds, in seconds, of the publish latency histogram.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// metrics holds what this process counts itself; the event counters come
// from the store, so they are exact across restarts and replicas.
type metrics struct {
	rejected  atomic.Int64 // publish requests answered 400, 408, 409, 413 or 415
	following atomic.Int64 // follow streams under way

	mu       sync.Mutex
	requests map[requestKey]int64
	buckets  []int64 // publish latency, per bucket (not cumulative)
	count    int64
	sum      float64
}

type requestKey struct {
	handler string
	code    int
}

func newMetrics() *metrics {
	return &metrics{requests: make(map[requestKey]int64), buckets: make([]int64, len(latencyBuckets)+1)}
}

func (m *metrics) request(handler string, code int) {
	m.mu.Lock()
	m.requests[requestKey{handler, code}]++
	m.mu.Unlock()
}

func (m *metrics) publishLatency(d time.Duration) {
	s := d.Seconds()
	i, _ := slices.BinarySearch(latencyBuckets, s)
	m.mu.Lock()
	m.buckets[i]++
	m.count++
	m.sum += s
	m.mu.Unlock()
}

// Metrics returns what GET /metrics serves, in the order it serves it: the
// event and claim counters read from the store, what this Handler counted
// itself (rejected publishes, follow streams, requests by handler and
// status code, the publish latency histogram), the queue depth, the uptime
// and the store's own metrics ([eventagg.MetricsReporter]). Every name
// starts with eventagg_. Each call reads the store's totals (one query);
// package promcollector calls it on each scrape to join a host's
// Prometheus registry.
//
// If the store's totals cannot be read, Metrics returns the rest, without
// the event and claim counters (rather than zeros that would read as a
// reset), and the store's error, which matches [eventagg.ErrStore], or the
// context's error if ctx ended. GET /metrics then serves the rest and logs
// the error.
func (h *Handler) Metrics(ctx context.Context) ([]Metric, error) {
	var stp *eventagg.Stats
	st, err := h.agg.QueryStats(ctx, eventagg.StatsQuery{})
	if err == nil {
		stp = &st
	}
	return h.metrics.snapshot(stp, h.agg.QueueLen(), h.uptime(), h.agg.StoreMetrics()), err
}

// snapshot gathers the metrics. The event counters come from st; they are
// left out when st is nil (the store could not be read).
func (m *metrics) snapshot(st *eventagg.Stats, queue int, uptime time.Duration, store []eventagg.StoreMetric) []Metric {
	var out []Metric
	one := func(name string, typ MetricType, help string, v float64) {
		out = append(out, Metric{Name: name, Help: help, Type: typ, Samples: []Sample{{Value: v}}})
	}
	if st != nil {
		one("eventagg_events_received_total", MetricCounter, "Events offered in accepted batches.", float64(st.Received))
		one("eventagg_events_unique_total", MetricCounter, "Events stored.", float64(st.UniqueProcessed))
		one("eventagg_events_duplicate_total", MetricCounter, "Events dropped as duplicates, conflicts included.", float64(st.DuplicateDropped))
		one("eventagg_events_conflict_total", MetricCounter, "Duplicates dropped whose payload differed from the stored copy's.", float64(st.Conflicts))
		one("eventagg_events_stored", MetricGauge, "Events in the store now.", float64(st.Stored))
		one("eventagg_events_expired_total", MetricCounter, "Events removed by retention.", float64(st.Expired))
		one("eventagg_topics", MetricGauge, "Topics that have received an event.", float64(st.TopicCount))
		if st.Claims != nil {
			one("eventagg_claims_active", MetricGauge, "Process-once claims held now, their lease running.", float64(st.Claims.Active))
			one("eventagg_claims_expired_total", MetricCounter, "Process-once claims whose lease ran out before they were completed or released.", float64(st.Claims.Expired))
		}
	}
	one("eventagg_publish_rejected_total", MetricCounter, "Publish requests this process rejected as malformed, invalid, too large or conflicting.", float64(m.rejected.Load()))
	one("eventagg_followers", MetricGauge, "GET /events?follow=true streams under way.", float64(m.following.Load()))
	one("eventagg_queue_depth", MetricGauge, "Publish calls waiting for the writer.", float64(queue))
	one("eventagg_uptime_seconds", MetricGauge, "Seconds since the server started.", uptime.Seconds())
	for _, sm := range store {
		one(sm.Name, MetricType(sm.Type), sm.Help, sm.Value)
	}

	m.mu.Lock()
	requests := maps.Clone(m.requests)
	buckets := slices.Clone(m.buckets)
	count, sum := m.count, m.sum
	m.mu.Unlock()

	keys := slices.SortedFunc(maps.Keys(requests), func(a, b requestKey) int {
		if c := strings.Compare(a.handler, b.handler); c != 0 {
			return c
		}
		return a.code - b.code
	})
	byCode := Metric{Name: "eventagg_http_requests_total", Type: MetricCounter, Help: "HTTP requests answered, by handler and status code.",
		Samples: make([]Sample, 0, len(keys))}
	for _, k := range keys {
		byCode.Samples = append(byCode.Samples, Sample{
			Labels: []Label{{"handler", k.handler}, {"code", strconv.Itoa(k.code)}},
			Value:  float64(requests[k]),
		})
	}
	out = append(out, byCode)

	hist := &HistogramValue{Buckets: make([]Bucket, len(latencyBuckets)), Count: uint64(count), Sum: sum}
	var cumulative int64
	for i, le := range latencyBuckets {
		cumulative += buckets[i]
		hist.Buckets[i] = Bucket{UpperBound: le, Count: uint64(cumulative)}
	}
	return append(out, Metric{Name: "eventagg_publish_duration_seconds", Type: MetricHistogram,
		Help: "Time to answer POST /publish, from request to response.", Histogram: hist})
}

// writeMetrics writes ms in the Prometheus text exposition format (version 0.0.4).
func writeMetrics(w io.Writer, ms []Metric) {
	for _, m := range ms {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.Name, m.Help, m.Name, m.Type)
		for _, s := range m.Samples {
			writeSample(w, m.Name, formatLabels(s.Labels), s.Value)
		}
		if h := m.Histogram; h != nil {
			for _, b := range h.Buckets {
				writeSample(w, m.Name+"_bucket", `{le="`+formatFloat(b.UpperBound)+`"}`, float64(b.Count))
			}
			writeSample(w, m.Name+"_bucket", `{le="+Inf"}`, float64(h.Count))
			writeSample(w, m.Name+"_sum", "", h.Sum)
			writeSample(w, m.Name+"_count", "", float64(h.Count))
		}
	}
}

func writeSample(w io.Writer, name, labels string, v float64) {
	fmt.Fprintf(w, "%s%s %s\n", name, labels, formatFloat(v))
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// formatLabels writes labels as {name="value",...}.
func formatLabels(labels []Label) string {
	if len(labels) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range labels {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Name + `="` + labelEscaper.Replace(l.Value) + `"`)
	}
	b.WriteByte('}')
	return b.String()
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
