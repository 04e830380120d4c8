// Package promcollector adapts the metrics of an [httpapi.Handler] to a
// [prometheus.Collector], so that a service that mounts the handler in its
// own mux serves eventagg's metrics from its own Prometheus registry,
// beside its own:
//
//	h := httpapi.NewHandler(agg, nil)
//	mux.Handle("/eventagg/", http.StripPrefix("/eventagg", h))
//	reg.MustRegister(promcollector.New(h, nil))
//
// The metrics are those of the handler's GET /metrics ([httpapi.Handler.Metrics]),
// with the same names, all with the eventagg_ prefix so that they do not
// clash with the host's, and the same types, help and labels. Each Collect
// reads them afresh: one query of the store's totals per scrape, as a GET
// /metrics makes. [Options].ConstLabels tells apart two handlers in one
// registry.
//
// This package is the only one of the module, with the reference server,
// that imports github.com/prometheus/client_golang: packages eventagg and
// httpapi do not depend on it.
//
// # An unchecked collector
//
// [Collector.Describe] sends no descriptor, which makes the collector
// unchecked in client_golang's terms: the set of metrics it yields is not
// fixed in advance. It depends on the store (its own metrics,
// [eventagg.MetricsReporter], and whether it holds claims) and on whether
// the store's totals could be read at the time of the scrape (they are left
// out, rather than reported as zero, when not). The registry still checks
// every gathered family for consistency and duplicates, at each Gather
// rather than at registration: registering two collectors of handlers with
// the same ConstLabels makes every Gather fail with a duplicate metric
// error.
package promcollector

import (
	"context"
	"time"

	"github.com/eventagg/eventagg/httpapi"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultTimeout is the default of [Options].Timeout.
const DefaultTimeout = 5 * time.Second

// Source is what a [Collector] reads: an [*httpapi.Handler].
type Source interface {
	// Metrics returns the metrics to collect, as [httpapi.Handler.Metrics]:
	// with an error, the metrics it could read.
	Metrics(ctx context.Context) ([]httpapi.Metric, error)
}

// Options configure a [Collector]. The zero value is the default.
type Options struct {
	// ConstLabels are added to every metric, for instance
	// prometheus.Labels{"store": "orders"} to tell apart two handlers
	// registered in one registry.
	ConstLabels prometheus.Labels
	// Timeout bounds each Collect's read of the store's totals, since a
	// Prometheus Collect has no context of its own. Default DefaultTimeout.
	Timeout time.Duration
	// OnError, if not nil, is called when a Collect could not read the
	// store's totals (the error matches [eventagg.ErrStore], or is the
	// timeout's): that scrape then lacks the event and claim counters, and
	// has the rest. Without it the error is dropped; the store's own
	// metrics and its health check say what is wrong.
	OnError func(error)
}

// Collector is a [prometheus.Collector] of a [Source]'s metrics. It is safe
// for concurrent use.
type Collector struct {
	src  Source
	opts Options
}

// New returns a Collector of src's metrics, usually an [*httpapi.Handler].
// opts may be nil.
func New(src Source, opts *Options) *Collector {
	c := &Collector{src: src}
	if opts != nil {
		c.opts = *opts
	}
	if c.opts.Timeout <= 0 {
		c.opts.Timeout = DefaultTimeout
	}
	return c
}

// Describe implements [prometheus.Collector]. It sends nothing: the
// collector is unchecked (see the package documentation).
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect implements [prometheus.Collector]: it reads the source's metrics
// and sends each sample as a constant metric. A metric the source got wrong
// (a name or label Prometheus does not allow) is sent as an invalid metric,
// which fails the Gather with an error naming it.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	ms, err := c.src.Metrics(ctx)
	if err != nil && c.opts.OnError != nil {
		c.opts.OnError(err)
	}
	for _, m := range ms {
		c.collect(ch, m)
	}
}

func (c *Collector) collect(ch chan<- prometheus.Metric, m httpapi.Metric) {
	if m.Histogram != nil {
		desc := prometheus.NewDesc(m.Name, m.Help, nil, c.opts.ConstLabels)
		buckets := make(map[float64]uint64, len(m.Histogram.Buckets))
		for _, b := range m.Histogram.Buckets {
			buckets[b.UpperBound] = b.Count
		}
		h, err := prometheus.NewConstHistogram(desc, m.Histogram.Count, m.Histogram.Sum, buckets)
		if err != nil {
			h = prometheus.NewInvalidMetric(desc, err)
		}
		ch <- h
		return
	}
	typ := prometheus.UntypedValue
	switch m.Type {
	case httpapi.MetricCounter:
		typ = prometheus.CounterValue
	case httpapi.MetricGauge:
		typ = prometheus.GaugeValue
	}
	var desc *prometheus.Desc
	var names []string // the label names of desc
	for _, s := range m.Samples {
		values := make([]string, len(s.Labels))
		if desc == nil || !sameNames(names, s.Labels) {
			names = make([]string, len(s.Labels))
			for i, l := range s.Labels {
				names[i] = l.Name
			}
			desc = prometheus.NewDesc(m.Name, m.Help, names, c.opts.ConstLabels)
		}
		for i, l := range s.Labels {
			values[i] = l.Value
		}
		pm, err := prometheus.NewConstMetric(desc, typ, s.Value, values...)
		if err != nil {
			pm = prometheus.NewInvalidMetric(desc, err)
		}
		ch <- pm
	}
}

func sameNames(names []string, labels []httpapi.Label) bool {
	if len(names) != len(labels) {
		return false
	}
	for i, l := range labels {
		if names[i] != l.Name {
			return false
		}
	}
	return true
}
