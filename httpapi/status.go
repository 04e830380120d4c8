package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"html/template"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventagg/eventagg"
)

// The status page: GET / for a request that accepts text/html (a browser)
// answers one HTML page, rendered on the server so that it reads without
// JavaScript: the counters of GET /stats, the largest topics, the ingest
// rate of the last minutes as a chart, the queue depth and follow streams,
// and the store's health as GET /health reports it. Its script, inline like
// its style (the page loads nothing else), refreshes that part every 10 s
// and shows a live tail of new events from GET /events?follow=true with an
// EventSource.
//
// Other requests for / (API clients, whose Accept does not name text/html)
// get the JSON 404 of every unknown path, as before the page existed.
const (
	// statusSampleEvery is how often the Handler samples the received
	// counter for the page's ingest chart, and statusSamples how many
	// samples it keeps: 15 minutes.
	statusSampleEvery = 10 * time.Second
	statusSamples     = 90
	// statusTopTopics is the number of rows of the page's topic table: the
	// largest topics by events received, among the first statusScanTopics
	// topics by name (one page of GET /stats's default size), so that a
	// page costs one read however many topics there are.
	statusTopTopics  = 20
	statusScanTopics = DefaultStatsTopics
	// statusBacklog is how many of the latest stored events the live tail
	// starts with (at most: sequence numbers may have gaps).
	statusBacklog = 10
)

//go:embed status/page.html status/page.css status/page.js
var statusFiles embed.FS

var (
	statusTemplate = template.Must(template.New("page.html").Funcs(template.FuncMap{
		"group": groupDigits,
		"rate":  formatRate,
	}).ParseFS(statusFiles, "status/page.html"))
	statusCSS = mustRead("status/page.css")
	statusJS  = mustRead("status/page.js")
	// statusCSP lets the page run its own inline style and script, found by
	// their digests, connect to its own origin (the tail and the refresh),
	// and nothing else: no other script, frame, form or image.
	statusCSP = "default-src 'none'; style-src '" + cspHash(statusCSS) + "'; script-src '" + cspHash(statusJS) +
		"'; connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

func mustRead(name string) string {
	b, err := statusFiles.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func cspHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

// ingestSample is the received counter at one moment.
type ingestSample struct {
	at       time.Time
	received int64
}

// ingestRing keeps the last statusSamples samples of the received counter,
// at least statusSampleEvery apart. Its zero value is empty.
type ingestRing struct {
	on  atomic.Bool  // the page has been asked for: sample from now on
	due atomic.Int64 // when the next sample may be taken, in Unix nanoseconds

	mu   sync.Mutex
	buf  [statusSamples]ingestSample
	next int // where the next sample goes
	n    int // samples held
}

// claim reports whether a sample is due at now, and if so makes the next
// one due statusSampleEvery later. It takes no lock: ServeHTTP calls it
// after every request.
func (r *ingestRing) claim(now time.Time) bool {
	due := r.due.Load()
	return now.UnixNano() >= due && r.due.CompareAndSwap(due, now.Add(statusSampleEvery).UnixNano())
}

// add keeps s, unless it is older than the last sample kept.
func (r *ingestRing) add(s ingestSample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 && s.at.Before(r.buf[(r.next-1+len(r.buf))%len(r.buf)].at) {
		return
	}
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	r.n = min(r.n+1, len(r.buf))
}

// samples returns the samples held, oldest first.
func (r *ingestRing) samples() []ingestSample {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ingestSample, 0, r.n)
	for i := range r.n {
		out = append(out, r.buf[(r.next-r.n+i+len(r.buf))%len(r.buf)])
	}
	return out
}

// sampleIngest samples the received counter for the status page's chart
// when a sample is due. ServeHTTP calls it after each request, and it
// samples once the page has been asked for, at most every
// statusSampleEvery: a Handler whose page no one opens reads nothing more
// than its requests do, and one that serves no requests reads nothing. The
// chart shows a time without samples as one interval at its average rate,
// which is exact for the events counted over it. The goroutine of a sample
// ends with its read, within statusSampleEvery; a store that fails leaves
// a gap.
func (h *Handler) sampleIngest() {
	if !h.ingest.on.Load() || !h.ingest.claim(h.opts.Now()) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(h.followsCtx, statusSampleEvery)
		defer cancel()
		if st, err := h.agg.QueryStats(ctx, eventagg.StatsQuery{}); err == nil {
			h.ingest.add(ingestSample{at: h.opts.Now(), received: st.Received})
		}
	}()
}

// acceptsHTML reports whether r asks for HTML at least as much as for JSON:
// browsers do, API clients (no Accept, */*, application/json) do not.
func acceptsHTML(r *http.Request) bool {
	var html, json float64
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			q := 1.0
			if s, ok := params["q"]; ok {
				if q, err = strconv.ParseFloat(s, 64); err != nil {
					continue
				}
			}
			switch mt {
			case "text/html", "application/xhtml+xml":
				html = max(html, q)
			case "application/json":
				json = max(json, q)
			}
		}
	}
	return html > 0 && html >= json
}

// statusData is what the page template shows.
type statusData struct {
	Now        time.Time
	Stats      *eventagg.Stats // nil when the store could not be read
	StatsError string
	Uptime     time.Duration
	Health     HealthResponse
	QueueDepth int
	Followers  int64

	Topics     []topicRow
	TopicsNote string // what the table leaves out, if anything

	Chart ingestChart

	// TailAfter is the seq the live tail starts after; TailError says why
	// the tail is off when it is not empty.
	TailAfter  int64
	TailError  string
	TokenReads bool // the tail and the refresh need the token on every request

	Style  template.CSS
	Script template.JS
}

type topicRow struct {
	Name string
	eventagg.Counts
}

// statusPage answers GET and HEAD / for a request that accepts HTML, and
// reports whether it did: it leaves other requests for / to the JSON 404.
// The page needs the token when reads do ([Options].TokenReads).
func (h *Handler) statusPage(w http.ResponseWriter, r *http.Request) bool {
	if (r.Method != http.MethodGet && r.Method != http.MethodHead) || !acceptsHTML(r) {
		return false
	}
	if rec, ok := w.(*recorder); ok {
		rec.handler = "status"
	}
	if err := h.authorize(r, "status"); err != nil {
		h.writeError(w, r, err)
		return true
	}
	if _, err := params(r); err != nil {
		h.writeError(w, r, err)
		return true
	}
	h.ingest.on.Store(true)
	d := h.statusData(r.Context())
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, d); err != nil { // a bug
		h.writeError(w, r, err)
		return true
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", statusCSP)
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(buf.Bytes())
	}
	return true
}

// statusData gathers what the page shows. A store that fails still gets a
// page, which says so.
func (h *Handler) statusData(ctx context.Context) statusData {
	d := statusData{
		Now:        h.opts.Now(),
		Uptime:     h.uptime().Truncate(time.Second),
		QueueDepth: h.agg.QueueLen(),
		Followers:  h.metrics.following.Load(),
		Health:     HealthResponse{Status: "healthy"},
		TokenReads: h.opts.Token != "" && h.opts.TokenReads,
		Style:      template.CSS(statusCSS),
		Script:     template.JS(statusJS),
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := h.agg.Ping(pctx); err != nil {
		d.Health = healthResponse(err)
	}
	st, err := h.agg.QueryStats(ctx, eventagg.StatsQuery{TopicsLimit: min(statusScanTopics, h.opts.MaxPage)})
	if err != nil {
		h.log.LogAttrs(ctx, slog.LevelWarn, "status page without the counters: the store fails", slog.Any("error", err))
		d.StatsError = healthResponse(err).Error
		d.TailError = "the store cannot be read"
		d.Chart = chartOf(h.ingest.samples(), d.Now, nil)
		return d
	}
	d.Stats = &st
	d.Topics, d.TopicsNote = topTopics(st)
	d.Chart = chartOf(h.ingest.samples(), d.Now, &ingestSample{at: d.Now, received: st.Received})
	if _, ok := h.agg.(Tailer); !ok {
		d.TailError = "this server cannot follow events: its backend has no Tail"
		return d
	}
	last, err := h.lastSeq(ctx)
	if err != nil {
		d.TailError = "the store cannot be read"
		return d
	}
	d.TailAfter = max(0, last-statusBacklog)
	return d
}

// topTopics returns the rows of the topic table, the largest first, and
// what the table leaves out.
func topTopics(st eventagg.Stats) ([]topicRow, string) {
	rows := make([]topicRow, 0, len(st.Topics))
	for name, c := range st.Topics {
		rows = append(rows, topicRow{Name: name, Counts: c})
	}
	slices.SortFunc(rows, func(a, b topicRow) int {
		return cmp.Or(cmp.Compare(b.Received, a.Received), strings.Compare(a.Name, b.Name))
	})
	shown := min(len(rows), statusTopTopics)
	var note string
	switch {
	case st.TopicCount > int64(len(st.Topics)):
		note = "The " + strconv.Itoa(shown) + " largest by events received of the first " + groupDigits(int64(len(st.Topics))) +
			" topics by name; " + groupDigits(st.TopicCount) + " topics in all. GET stats lists them all, a page at a time."
	case len(rows) > shown:
		note = "The " + strconv.Itoa(shown) + " largest of " + groupDigits(st.TopicCount) + " topics by events received."
	}
	return rows[:shown], note
}

// lastSeq returns the seq of the latest stored event, 0 if there is none,
// with a few reads of one event each: a search for the last seq after
// which no event follows. Seqs grow, so whether an event follows a seq
// changes once, from yes to no.
func (h *Handler) lastSeq(ctx context.Context) (int64, error) {
	// first returns the seq of the first event after seq, 0 if none.
	first := func(seq int64) (int64, error) {
		for e, err := range h.agg.Events(ctx, eventagg.Query{After: seq, Limit: 1}) {
			return e.Seq, err
		}
		return 0, nil
	}
	lo, err := first(0) // an event's seq
	if err != nil || lo == 0 {
		return 0, err
	}
	// Find hi, after which no event follows, doubling the distance; then
	// narrow (lo, hi] down. Each step moves lo up to an event or hi down.
	hi := int64(0)
	for step := int64(1); hi == 0; step = min(step*2, math.MaxInt64/4) {
		probe := lo + min(step, math.MaxInt64-lo)
		s, err := first(probe)
		if err != nil {
			return 0, err
		}
		if s == 0 {
			hi = probe
		} else {
			lo = s
		}
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		s, err := first(mid)
		if err != nil {
			return 0, err
		}
		if s == 0 {
			hi = mid
		} else {
			lo = s
		}
	}
	return lo, nil
}

// ingestChart is the page's chart of events received per second: one bar
// per interval between two samples, over the time the samples span.
type ingestChart struct {
	Bars    []chartBar
	Peak    float64       // the highest rate, the top of the chart
	Current float64       // the rate over the last interval
	Span    time.Duration // from the first sample to the last
	Every   time.Duration // the sampling interval
}

// chartBar is one bar, in the chart's coordinates (chartWidth by chartHeight).
type chartBar struct {
	X, Y, W, H float64
	Rate       float64
	From, To   time.Time
}

// The size of the chart's drawing area, in SVG user units.
const (
	chartWidth  = 600
	chartHeight = 120
)

// chartOf draws the samples of the statusSamples*statusSampleEvery before
// now, from the last sample before that on, and cur after them when it is
// not nil (the counter read for the page: the rate since the last sample).
func chartOf(samples []ingestSample, now time.Time, cur *ingestSample) ingestChart {
	c := ingestChart{Every: statusSampleEvery}
	from := now.Add(-statusSamples * statusSampleEvery)
	if i, _ := slices.BinarySearchFunc(samples, from, func(s ingestSample, t time.Time) int { return s.at.Compare(t) }); i > 1 {
		samples = samples[i-1:]
	}
	if cur != nil && (len(samples) == 0 || cur.at.Sub(samples[len(samples)-1].at) >= time.Second) {
		samples = append(samples, *cur)
	}
	if len(samples) < 2 {
		return c
	}
	start, end := samples[0].at, samples[len(samples)-1].at
	span := end.Sub(start)
	if span <= 0 {
		return c
	}
	c.Span = span.Round(time.Second)
	for i := 1; i < len(samples); i++ {
		a, b := samples[i-1], samples[i]
		dt := b.at.Sub(a.at).Seconds()
		if dt <= 0 {
			continue
		}
		rate := float64(max(0, b.received-a.received)) / dt
		c.Bars = append(c.Bars, chartBar{Rate: rate, From: a.at, To: b.at})
		c.Peak = max(c.Peak, rate)
		c.Current = rate
	}
	top := max(c.Peak, 1)
	for i := range c.Bars {
		b := &c.Bars[i]
		x0 := b.From.Sub(start).Seconds() / span.Seconds() * chartWidth
		x1 := b.To.Sub(start).Seconds() / span.Seconds() * chartWidth
		b.X, b.W = round1(x0), round1(max(x1-x0-1, 0.5))
		b.H = round1(b.Rate / top * chartHeight)
		b.Y = round1(chartHeight - b.H)
	}
	return c
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// groupDigits writes n with a comma between groups of three digits.
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// formatRate writes an events-per-second rate with the precision it needs.
func formatRate(r float64) string {
	switch {
	case r >= 100:
		return groupDigits(int64(math.Round(r)))
	case r >= 10:
		return strconv.FormatFloat(r, 'f', 1, 64)
	}
	return strconv.FormatFloat(r, 'f', 2, 64)
}
