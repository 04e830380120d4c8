package httpapi

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventagg/eventagg"
)

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

// write writes the Prometheus text exposition format (version 0.0.4).
// The event counters come from st; they are left out when st is nil (the
// store could not be read), rather than reported as zero.
func (m *metrics) write(w io.Writer, st *eventagg.Stats, queue int, uptime time.Duration, store []eventagg.StoreMetric) {
	p := &promWriter{w: w}
	if st != nil {
		p.metric("eventagg_events_received_total", "counter", "Events offered in accepted batches.", float64(st.Received))
		p.metric("eventagg_events_unique_total", "counter", "Events stored.", float64(st.UniqueProcessed))
		p.metric("eventagg_events_duplicate_total", "counter", "Events dropped as duplicates, conflicts included.", float64(st.DuplicateDropped))
		p.metric("eventagg_events_conflict_total", "counter", "Duplicates dropped whose payload differed from the stored copy's.", float64(st.Conflicts))
		p.metric("eventagg_events_stored", "gauge", "Events in the store now.", float64(st.Stored))
		p.metric("eventagg_events_expired_total", "counter", "Events removed by retention.", float64(st.Expired))
		p.metric("eventagg_topics", "gauge", "Topics that have received an event.", float64(st.TopicCount))
		if st.Claims != nil {
			p.metric("eventagg_claims_active", "gauge", "Process-once claims held now, their lease running.", float64(st.Claims.Active))
			p.metric("eventagg_claims_expired_total", "counter", "Process-once claims whose lease ran out before they were completed or released.", float64(st.Claims.Expired))
		}
	}
	p.metric("eventagg_publish_rejected_total", "counter", "Publish requests this process rejected as malformed, invalid, too large or conflicting.", float64(m.rejected.Load()))
	p.metric("eventagg_followers", "gauge", "GET /events?follow=true streams under way.", float64(m.following.Load()))
	p.metric("eventagg_queue_depth", "gauge", "Publish calls waiting for the writer.", float64(queue))
	p.metric("eventagg_uptime_seconds", "gauge", "Seconds since the server started.", uptime.Seconds())
	for _, sm := range store {
		p.metric(sm.Name, sm.Type, sm.Help, sm.Value)
	}

	m.mu.Lock()
	requests := maps.Clone(m.requests)
	buckets := slices.Clone(m.buckets)
	count, sum := m.count, m.sum
	m.mu.Unlock()

	p.header("eventagg_http_requests_total", "counter", "HTTP requests answered, by handler and status code.")
	keys := slices.SortedFunc(maps.Keys(requests), func(a, b requestKey) int {
		if a.handler != b.handler {
			if a.handler < b.handler {
				return -1
			}
			return 1
		}
		return a.code - b.code
	})
	for _, k := range keys {
		p.sample("eventagg_http_requests_total", `{handler="`+k.handler+`",code="`+strconv.Itoa(k.code)+`"}`, float64(requests[k]))
	}

	p.header("eventagg_publish_duration_seconds", "histogram", "Time to answer POST /publish, from request to response.")
	var cumulative int64
	for i, le := range latencyBuckets {
		cumulative += buckets[i]
		p.sample("eventagg_publish_duration_seconds_bucket", `{le="`+formatFloat(le)+`"}`, float64(cumulative))
	}
	p.sample("eventagg_publish_duration_seconds_bucket", `{le="+Inf"}`, float64(count))
	p.sample("eventagg_publish_duration_seconds_sum", "", sum)
	p.sample("eventagg_publish_duration_seconds_count", "", float64(count))
}

type promWriter struct{ w io.Writer }

func (p *promWriter) header(name, typ, help string) {
	fmt.Fprintf(p.w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func (p *promWriter) sample(name, labels string, v float64) {
	fmt.Fprintf(p.w, "%s%s %s\n", name, labels, formatFloat(v))
}

func (p *promWriter) metric(name, typ, help string, v float64) {
	p.header(name, typ, help)
	p.sample(name, "", v)
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
