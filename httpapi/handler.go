package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/internal/loglimit"
)

// Defaults of [Options].
const (
	DefaultMaxBodyBytes        = 16 << 20         // 16 MiB
	DefaultMaxEventsPerRequest = 10000            // events per publish request
	DefaultMaxPage             = 10000            // events per GET /events page with a limit, topics per GET /stats page
	DefaultStatsTopics         = 1000             // topics on a GET /stats page without topics_limit
	DefaultMaxListings         = 32               // GET /events answers under way at once
	DefaultWriteTimeout        = 30 * time.Second // wait for a client to take more of an answer
)

// Options configures [NewHandler]. The zero value is the default.
type Options struct {
	// MaxBodyBytes bounds a publish request body; larger bodies get 413.
	// Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxEventsPerRequest bounds the events of one publish request; more
	// get 413. Default DefaultMaxEventsPerRequest. (How many events the
	// Aggregator merges into one commit is another setting:
	// [eventagg.Options].MaxEventsPerCommit.)
	MaxEventsPerRequest int
	// MaxPage bounds the limit parameter of GET /events and the
	// topics_limit parameter of GET /stats. Default DefaultMaxPage.
	MaxPage int
	// MaxListings bounds the GET /events answers streamed at once; above it
	// a listing gets 503 with Retry-After. Default DefaultMaxListings.
	MaxListings int
	// WriteTimeout bounds how long an answer waits for the client to take
	// more of it: every write of an answer must complete within it, so a
	// listing whose client stops reading is cut after WriteTimeout, and
	// what it held is freed. It needs a ResponseWriter that supports
	// [http.ResponseController.SetWriteDeadline], as net/http's does.
	// Default DefaultWriteTimeout; negative: no deadline.
	WriteTimeout time.Duration
	// Logger receives one access record per request (method, path, status,
	// duration, events; never payloads) and the errors that become 5xx.
	// Default: no logging.
	Logger *slog.Logger
	// Now is the clock for uptime and latency; default time.Now.
	Now func() time.Time
	// Token, if not empty, is the bearer token POST /publish requires:
	// a request without "Authorization: Bearer <Token>" gets 401 with a
	// WWW-Authenticate challenge. Tokens are compared in constant time.
	Token string
	// TokenReads, with Token, requires the token for GET /events, /stats,
	// /metrics and the status page (GET / for browsers) as well. GET /health
	// and GET /openapi.json never require it.
	TokenReads bool
	// MaxFollowers bounds the GET /events?follow=true streams served at
	// once; above it a follow gets 503 with Retry-After. Default
	// DefaultMaxFollowers. Each holds at most a page of events
	// ([eventagg.TailPage], [eventagg.TailPageBytes]) however slowly its
	// client reads.
	MaxFollowers int
	// Heartbeat is how long a follow stream may go without sending
	// anything: then it sends a comment line, so that proxies and clients
	// see it alive. Default DefaultHeartbeat.
	Heartbeat time.Duration
}

// Backend is what a [Handler] serves: the methods of [*eventagg.Aggregator]
// that it calls, and with their error contracts. A Backend other than an
// Aggregator (one that wraps an Aggregator to add metrics, say) answers as
// the Aggregator would.
type Backend interface {
	// Publish stores a batch: see [eventagg.Aggregator.Publish], whose errors
	// ([*eventagg.ValidationError], [*eventagg.ConflictError],
	// [eventagg.ErrQueueFull], [eventagg.ErrClosed], [eventagg.ErrStore])
	// become the 400, 409 and 503 answers of POST /publish.
	eventagg.Publisher
	// Events lists stored events, as [eventagg.Aggregator.Events]: an error
	// of the store matches [eventagg.ErrStore] (503); one after Close,
	// [eventagg.ErrClosed] (503).
	Events(ctx context.Context, q eventagg.Query) iter.Seq2[eventagg.Event, error]
	// QueryStats returns the totals and a page of topics, as
	// [eventagg.Aggregator.QueryStats], with the errors of Events.
	QueryStats(ctx context.Context, q eventagg.StatsQuery) (eventagg.Stats, error)
	// Ping returns nil if the backend can serve requests, [eventagg.ErrClosed]
	// once it is shutting down, or why the store cannot.
	Ping(ctx context.Context) error
	// QueueLen returns how many Publish calls wait for the writer.
	QueueLen() int
	// StartedAt returns when the backend started, for uptime.
	StartedAt() time.Time
	// StoreMetrics returns the store's own metrics, or nil.
	StoreMetrics() []eventagg.StoreMetric
}

// Handler serves the eventagg HTTP API for a [Backend], such as an
// [*eventagg.Aggregator]:
//
//	POST /publish   one event, a JSON array of events, or {"events":[...]}
//	GET  /events    ?topic=&after=&limit=  stored events in acceptance order
//	GET  /events    ?follow=true&topic=&after=  the same, then new ones as they come (server-sent events)
//	GET  /stats     ?topics_after=&topics_limit=  counters, a page of topics, uptime
//	GET  /health    {"status":"healthy"} or 503
//	GET  /metrics   Prometheus text format
//	GET  /openapi.json  the OpenAPI 3.1 description of all these (see [OpenAPI])
//	GET  /          a status page for browsers: requests that accept text/html
//
// Every error answer is an [ErrorResponse]: JSON with an "error" message and
// a machine-readable "code" (the Code constants). A Handler is safe for
// concurrent use and can be mounted in any mux, under any prefix with
// [http.StripPrefix].
type Handler struct {
	agg      Backend
	opts     Options
	log      *slog.Logger
	mux      *http.ServeMux
	metrics  *metrics
	tokenSum [sha256.Size]byte // of opts.Token
	listings chan struct{}     // one per GET /events answer under way

	storeLog *loglimit.Limiter // store errors: at most one record a second

	followers  chan struct{}   // one per follow stream under way
	followsCtx context.Context // ends at CloseFollows
	endFollows context.CancelFunc

	ingest ingestRing // samples of the received counter, for the status page
}

// NewHandler returns a Handler serving agg, usually an [*eventagg.Aggregator].
// opts may be nil.
func NewHandler(agg Backend, opts *Options) *Handler {
	h := &Handler{agg: agg, metrics: newMetrics(), mux: http.NewServeMux(), storeLog: loglimit.New(time.Second)}
	if opts != nil {
		h.opts = *opts
	}
	if h.opts.MaxBodyBytes <= 0 {
		h.opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if h.opts.MaxEventsPerRequest <= 0 {
		h.opts.MaxEventsPerRequest = DefaultMaxEventsPerRequest
	}
	if h.opts.MaxPage <= 0 {
		h.opts.MaxPage = DefaultMaxPage
	}
	if h.opts.MaxListings <= 0 {
		h.opts.MaxListings = DefaultMaxListings
	}
	if h.opts.WriteTimeout == 0 {
		h.opts.WriteTimeout = DefaultWriteTimeout
	}
	h.listings = make(chan struct{}, h.opts.MaxListings)
	if h.opts.MaxFollowers <= 0 {
		h.opts.MaxFollowers = DefaultMaxFollowers
	}
	if h.opts.Heartbeat <= 0 {
		h.opts.Heartbeat = DefaultHeartbeat
	}
	h.followers = make(chan struct{}, h.opts.MaxFollowers)
	h.followsCtx, h.endFollows = context.WithCancel(context.Background())
	if h.opts.Now == nil {
		h.opts.Now = time.Now
	}
	h.tokenSum = sha256.Sum256([]byte(h.opts.Token))
	h.log = h.opts.Logger
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.route("/publish", "publish", h.publish, http.MethodPost)
	h.route("/events", "events", h.events, http.MethodGet, http.MethodHead)
	h.route("/stats", "stats", h.stats, http.MethodGet, http.MethodHead)
	h.route("/health", "health", h.health, http.MethodGet, http.MethodHead)
	h.route("/metrics", "metrics", h.serveMetrics, http.MethodGet, http.MethodHead)
	h.route("/openapi.json", "openapi", h.serveOpenAPI, http.MethodGet, http.MethodHead)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && h.statusPage(w, r) {
			return
		}
		p := mountPrefix(r)
		h.writeError(w, r, &requestError{status: http.StatusNotFound, index: -1,
			msg: fmt.Sprintf("no such endpoint: %s (try POST %s/publish, GET %[2]s/events, %[2]s/stats, %[2]s/health, %[2]s/metrics or %[2]s/openapi.json)", p+r.URL.Path, p)})
	})
	return h
}

// route registers fn for path, answering other methods with 405 and Allow.
func (h *Handler) route(path, name string, fn http.HandlerFunc, methods ...string) {
	allow := strings.Join(methods, ", ")
	h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		if rec, ok := w.(*recorder); ok {
			rec.handler = name
		}
		for _, m := range methods {
			if r.Method == m {
				if err := h.authorize(r, name); err != nil {
					h.writeError(w, r, err)
					return
				}
				fn(w, r)
				return
			}
		}
		w.Header().Set("Allow", allow)
		h.writeError(w, r, &requestError{status: http.StatusMethodNotAllowed, index: -1,
			msg: fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, mountPrefix(r)+r.URL.Path, allow)})
	})
}

// ServeHTTP implements [http.Handler].
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.opts.Now()
	rec := &recorder{ResponseWriter: w, handler: "other", events: -1, writeTimeout: h.opts.WriteTimeout}
	defer rec.finish()
	defer func() {
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		d := h.opts.Now().Sub(start)
		h.metrics.request(rec.handler, status)
		if rec.handler == "publish" {
			h.metrics.publishLatency(d)
			switch status {
			case http.StatusBadRequest, http.StatusRequestTimeout, http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
				h.metrics.rejected.Add(1) // the request itself was at fault
			}
		}
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("path", mountPrefix(r)+r.URL.Path),
			slog.Int("status", status),
			slog.Duration("duration", d),
		}
		if rec.events >= 0 {
			attrs = append(attrs, slog.Int("events", rec.events))
		}
		h.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
	}()
	h.mux.ServeHTTP(rec, r)
	h.sampleIngest()
}

// recorder remembers what a handler answered, for the access log and
// metrics, and gives every write of the answer a deadline.
type recorder struct {
	http.ResponseWriter
	status  int
	handler string // metrics label
	events  int    // events in a publish request; -1 if not one

	writeTimeout time.Duration
	deadline     time.Time // the write deadline last set; zero if none
	noDeadline   bool      // the ResponseWriter cannot take one
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.extend()
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.extend()
	return r.ResponseWriter.Write(b)
}

// extend moves the write deadline to writeTimeout from now, unless it was
// moved less than a sixteenth of that ago: a client that takes nothing of
// the answer for writeTimeout is cut, one that reads slowly is not.
func (r *recorder) extend() {
	if r.writeTimeout <= 0 || r.noDeadline {
		return
	}
	now := time.Now()
	if !r.deadline.IsZero() && now.Sub(r.deadline.Add(-r.writeTimeout)) < r.writeTimeout/16 {
		return
	}
	if err := http.NewResponseController(r.ResponseWriter).SetWriteDeadline(now.Add(r.writeTimeout)); err != nil {
		r.noDeadline = true
		return
	}
	r.deadline = now.Add(r.writeTimeout)
}

// finish flushes the answer under its deadline, then clears the deadline,
// which would otherwise stay on the connection for the next request.
func (r *recorder) finish() {
	if r.deadline.IsZero() {
		return
	}
	rc := http.NewResponseController(r.ResponseWriter)
	rc.Flush()
	rc.SetWriteDeadline(time.Time{})
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// PublishResponse is the body of a successful POST /publish.
type PublishResponse struct {
	Processed int `json:"processed_count"` // events stored by this request
	// Duplicates counts the events dropped because their key was stored
	// already (or came earlier in the request), conflicts included.
	Duplicates int `json:"duplicate_dropped"`
	// Conflicts counts those of the duplicates whose payload differed from
	// the stored copy's (see [eventagg.Conflict]).
	Conflicts int `json:"conflicts"`
	// DuplicateIndexes lists the positions in the request of every dropped
	// event, conflicts included, in increasing order; ConflictIndexes those
	// of the conflicts only. Both are present, possibly empty, when the
	// request asks with ?duplicates=true, and absent otherwise.
	DuplicateIndexes []int `json:"duplicate_indexes,omitzero"`
	ConflictIndexes  []int `json:"conflict_indexes,omitzero"`
}

func (h *Handler) publish(w http.ResponseWriter, r *http.Request) {
	gzipped, err := checkBodyHeaders(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	v, err := params(r, "duplicates")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	withIndexes, err := boolParam(v, "duplicates")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	body, err := readBody(w, r, h.opts.MaxBodyBytes, gzipped)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	events, err := decodeEvents(body, h.opts.MaxEventsPerRequest)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if rec, ok := w.(*recorder); ok {
		rec.events = len(events)
	}
	res, err := h.agg.Publish(r.Context(), events...)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	resp := PublishResponse{Processed: res.Processed, Duplicates: res.Duplicates, Conflicts: res.Conflicts}
	if withIndexes {
		resp.DuplicateIndexes = make([]int, 0, res.Duplicates)
		resp.ConflictIndexes = make([]int, 0, res.Conflicts)
		for i, o := range res.Outcomes {
			switch o.Status {
			case eventagg.Conflict:
				resp.ConflictIndexes = append(resp.ConflictIndexes, i)
				fallthrough
			case eventagg.Duplicate:
				resp.DuplicateIndexes = append(resp.DuplicateIndexes, i)
			}
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	v, err := params(r, "topic", "after", "limit", "follow")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	q, err := h.parseQuery(v)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if follow, err := boolParam(v, "follow"); err != nil {
		h.writeError(w, r, err)
		return
	} else if follow {
		h.follow(w, r, q)
		return
	}
	select {
	case h.listings <- struct{}{}:
		defer func() { <-h.listings }()
	default:
		h.writeError(w, r, tooManyListings{max: cap(h.listings)})
		return
	}
	if q.Limit == 0 {
		// No limit: stream everything, never holding more than the store's page.
		h.writeEvents(w, r, h.agg.Events(r.Context(), q))
		return
	}
	// With a limit, read one event past the page to know whether a next
	// page exists, and link to it before the body starts. A page also ends
	// after the event that brings its payloads to eventagg.PageBytes, so
	// that it holds little memory however large the events are.
	limit := q.Limit
	q.Limit++
	page := make([]eventagg.Event, 0, min(limit+1, 1024))
	more, size := false, 0
	for e, err := range h.agg.Events(r.Context(), q) {
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		if len(page) == limit || size >= eventagg.PageBytes {
			more = true
			break
		}
		page = append(page, e)
		size += len(e.Payload)
	}
	if more {
		next := url.Values{}
		if q.Topic != "" {
			next.Set("topic", q.Topic)
		}
		next.Set("after", strconv.FormatInt(page[len(page)-1].Seq, 10))
		next.Set("limit", strconv.Itoa(limit))
		w.Header().Set("Link", nextLink(next))
	}
	h.writeEvents(w, r, func(yield func(eventagg.Event, error) bool) {
		for _, e := range page {
			if !yield(e, nil) {
				return
			}
		}
	})
}

// nextLink returns a Link header value pointing to the next page, as a
// reference relative to the request's own URL (RFC 3986: the same path with
// the query q), so that it works wherever the Handler is mounted.
func nextLink(q url.Values) string {
	return "<?" + q.Encode() + `>; rel="next"`
}

// writeEvents writes events as a JSON array, one event per line, payloads
// byte for byte as stored. An error before the first event becomes an error
// answer; after it, the response is cut short so that the client sees an
// incomplete array rather than a short but valid one.
func (h *Handler) writeEvents(w http.ResponseWriter, r *http.Request, events iter.Seq2[eventagg.Event, error]) {
	var buf []byte
	n := 0
	for e, err := range events {
		if err != nil {
			if n == 0 {
				h.writeError(w, r, err)
				return
			}
			h.log.LogAttrs(r.Context(), slog.LevelError, "listing events failed mid-stream", slog.Any("error", err))
			panic(http.ErrAbortHandler)
		}
		if n == 0 {
			setJSONHeaders(w)
			buf = append(buf[:0], "[\n"...)
		} else {
			buf = append(buf[:0], ",\n"...)
		}
		n++
		buf = appendEvent(buf, &e)
		if _, err := w.Write(buf); err != nil {
			return // the client went away
		}
	}
	if n == 0 {
		setJSONHeaders(w)
		w.Write([]byte("[]\n"))
		return
	}
	w.Write([]byte("\n]\n"))
}

func (h *Handler) parseQuery(v map[string]string) (eventagg.Query, error) {
	var q eventagg.Query
	q.Topic = v["topic"]
	if s := v["after"]; s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return q, badRequest(-1, "after", "after must be a sequence number (an integer >= 0), not %q", s)
		}
		q.After = n
	}
	if s, ok := v["limit"]; ok {
		n, err := h.pageParam("limit", s)
		if err != nil {
			return q, err
		}
		q.Limit = n
	}
	return q, nil
}

// pageParam reads the page size given as parameter name.
func (h *Handler) pageParam(name, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > h.opts.MaxPage {
		return 0, badRequest(-1, name, "%s must be an integer from 1 to %d, not %q", name, h.opts.MaxPage, s)
	}
	return n, nil
}

// StatsResponse is the body of GET /stats. Its Topics hold one page of
// topics by name (see the handler's documentation); TopicCount counts them all.
type StatsResponse struct {
	eventagg.Stats
	UptimeSeconds float64 `json:"uptime_seconds"`
}

func (h *Handler) stats(w http.ResponseWriter, r *http.Request) {
	v, err := params(r, "topics_after", "topics_limit")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	limit := min(DefaultStatsTopics, h.opts.MaxPage)
	if s, ok := v["topics_limit"]; ok {
		if limit, err = h.pageParam("topics_limit", s); err != nil {
			h.writeError(w, r, err)
			return
		}
	}
	// One topic past the page tells whether a next page exists.
	st, err := h.agg.QueryStats(r.Context(), eventagg.StatsQuery{TopicsAfter: v["topics_after"], TopicsLimit: limit + 1})
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if len(st.Topics) > limit {
		names := slices.Sorted(maps.Keys(st.Topics))
		delete(st.Topics, names[limit])
		w.Header().Set("Link", nextLink(url.Values{
			"topics_after": {names[limit-1]},
			"topics_limit": {strconv.Itoa(limit)},
		}))
	}
	writeJSON(w, http.StatusOK, StatsResponse{Stats: st, UptimeSeconds: float64(h.uptime().Milliseconds()) / 1000})
}

func (h *Handler) uptime() time.Duration {
	return h.opts.Now().Sub(h.agg.StartedAt()).Truncate(time.Millisecond)
}

// HealthResponse is the body of GET /health.
type HealthResponse struct {
	Status string `json:"status"`          // "healthy" or "unhealthy"
	Error  string `json:"error,omitempty"` // why it is unhealthy
	// Code says why for programs: CodeShuttingDown, CodeStoreDamaged or
	// CodeStoreUnavailable; empty when healthy.
	Code string `json:"code,omitempty"`
}

func (h *Handler) health(w http.ResponseWriter, r *http.Request) {
	if _, err := params(r); err != nil {
		h.writeError(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := h.agg.Ping(ctx); err != nil {
		h.log.LogAttrs(r.Context(), slog.LevelWarn, "health check failed", slog.Any("error", err))
		writeJSON(w, http.StatusServiceUnavailable, healthResponse(err))
		return
	}
	writeJSON(w, http.StatusOK, HealthResponse{Status: "healthy"})
}

// healthResponse returns what GET /health answers when the backend's Ping
// returned err, never nil: why it is unhealthy, without the store's error.
func healthResponse(err error) HealthResponse {
	body := HealthResponse{Status: "unhealthy", Code: CodeStoreUnavailable, Error: "store unavailable"}
	switch {
	case errors.Is(err, eventagg.ErrClosed):
		body.Code, body.Error = CodeShuttingDown, "shutting down"
	case errors.Is(err, eventagg.ErrDamaged):
		body.Code, body.Error = CodeStoreDamaged, "store damaged: writes are refused until it is repaired and reopened (see the server log)"
	}
	return body
}

func (h *Handler) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if _, err := params(r); err != nil {
		h.writeError(w, r, err)
		return
	}
	// Without the totals (the store fails) the rest is still served: the
	// store's own metrics say what is wrong.
	ms, err := h.Metrics(r.Context())
	switch {
	case err == nil:
	case r.Context().Err() != nil:
		h.writeError(w, r, err)
		return
	default:
		h.log.LogAttrs(r.Context(), slog.LevelWarn, "metrics without the event counters: the store fails", slog.Any("error", err))
	}
	var buf bytes.Buffer
	writeMetrics(&buf, ms)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write(buf.Bytes())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // only for values that cannot be JSON: a bug
		status, body = http.StatusInternalServerError, []byte(`{"error":"internal error","code":"internal"}`)
	}
	setJSONHeaders(w)
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// setJSONHeaders marks the answer as JSON that browsers must not sniff.
func setJSONHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
}

func boolParam(v map[string]string, name string) (bool, error) {
	s := v[name]
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, badRequest(-1, name, "%s must be true or false, not %q", name, s)
	}
	return b, nil
}
