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
)

// Defaults of [Options].
const (
	DefaultMaxBodyBytes = 16 << 20         // 16 MiB
	DefaultMaxBatch     = 10000            // events per request
	DefaultMaxPage      = 10000            // events per GET /events page with a limit, topics per GET /stats page
	DefaultStatsTopics  = 1000             // topics on a GET /stats page without topics_limit
	DefaultMaxListings  = 32               // GET /events answers under way at once
	DefaultWriteTimeout = 30 * time.Second // wait for a client to take more of an answer
)

// Options configures [NewHandler]. The zero value is the default.
type Options struct {
	// MaxBodyBytes bounds a publish request body; larger bodies get 413.
	// Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxBatch bounds the events of one publish request; more get 413.
	// Default DefaultMaxBatch.
	MaxBatch int
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
	// TokenReads, with Token, requires the token for GET /events, /stats
	// and /metrics as well. GET /health never requires it.
	TokenReads bool
}

// Handler serves the eventagg HTTP API for an [eventagg.Aggregator]:
//
//	POST /publish   one event, a JSON array of events, or {"events":[...]}
//	GET  /events    ?topic=&after=&limit=  stored events in acceptance order
//	GET  /stats     ?topics_after=&topics_limit=  counters, a page of topics, uptime
//	GET  /health    {"status":"healthy"} or 503
//	GET  /metrics   Prometheus text format
//
// Every error answer is JSON with an "error" string. A Handler is safe for
// concurrent use and can be mounted in any mux, under any prefix with
// [http.StripPrefix].
type Handler struct {
	agg      *eventagg.Aggregator
	opts     Options
	log      *slog.Logger
	mux      *http.ServeMux
	metrics  *metrics
	tokenSum [sha256.Size]byte // of opts.Token
	listings chan struct{}     // one per GET /events answer under way
}

// NewHandler returns a Handler serving agg. opts may be nil.
func NewHandler(agg *eventagg.Aggregator, opts *Options) *Handler {
	h := &Handler{agg: agg, metrics: newMetrics(), mux: http.NewServeMux()}
	if opts != nil {
		h.opts = *opts
	}
	if h.opts.MaxBodyBytes <= 0 {
		h.opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if h.opts.MaxBatch <= 0 {
		h.opts.MaxBatch = DefaultMaxBatch
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
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		p := mountPrefix(r)
		h.writeError(w, r, &requestError{status: http.StatusNotFound, index: -1,
			msg: fmt.Sprintf("no such endpoint: %s (try POST %s/publish, GET %[2]s/events, %[2]s/stats, %[2]s/health or %[2]s/metrics)", p+r.URL.Path, p)})
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
			case http.StatusBadRequest, http.StatusRequestTimeout, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
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
	Processed  int `json:"processed_count"`   // events stored by this request
	Duplicates int `json:"duplicate_dropped"` // events dropped as duplicates
	// DuplicateIndexes lists the positions of the dropped events in the
	// request; present only when the request asks with ?duplicates=true.
	DuplicateIndexes []int `json:"duplicate_indexes,omitempty"`
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
	events, err := decodeEvents(body, h.opts.MaxBatch)
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
	resp := PublishResponse{Processed: res.Processed, Duplicates: res.Duplicates}
	if withIndexes {
		resp.DuplicateIndexes = []int{}
		for i, stored := range res.New {
			if !stored {
				resp.DuplicateIndexes = append(resp.DuplicateIndexes, i)
			}
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	v, err := params(r, "topic", "after", "limit")
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	q, err := h.parseQuery(v)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	select {
	case h.listings <- struct{}{}:
		defer func() { <-h.listings }()
	default:
		h.writeError(w, r, &requestError{status: http.StatusServiceUnavailable, index: -1,
			msg: fmt.Sprintf("too many listings under way (%d); retry later", cap(h.listings))})
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
		msg := "store unavailable"
		switch {
		case errors.Is(err, eventagg.ErrClosed):
			msg = "shutting down"
		case errors.Is(err, eventagg.ErrDamaged):
			msg = "store damaged: writes are refused until it is repaired and reopened (see the server log)"
		}
		writeJSON(w, http.StatusServiceUnavailable, HealthResponse{Status: "unhealthy", Error: msg})
		return
	}
	writeJSON(w, http.StatusOK, HealthResponse{Status: "healthy"})
}

func (h *Handler) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if _, err := params(r); err != nil {
		h.writeError(w, r, err)
		return
	}
	// The totals only. Without them (the store fails) the rest is still
	// served: the store's own metrics say what is wrong.
	var stp *eventagg.Stats
	st, err := h.agg.QueryStats(r.Context(), eventagg.StatsQuery{})
	switch {
	case err == nil:
		stp = &st
	case r.Context().Err() != nil:
		h.writeError(w, r, err)
		return
	default:
		h.log.LogAttrs(r.Context(), slog.LevelWarn, "metrics without the event counters: the store fails", slog.Any("error", err))
	}
	var buf bytes.Buffer
	h.metrics.write(&buf, stp, h.agg.QueueLen(), h.uptime(), h.agg.StoreMetrics())
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write(buf.Bytes())
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"`
	// Index is the position of the offending event in a publish request.
	Index *int `json:"index,omitempty"`
	// Field is the JSON field at fault, when known.
	Field string `json:"field,omitempty"`
}

// writeError is the one place where errors become status codes:
//   - a request without the bearer token it needs: 401 with WWW-Authenticate;
//   - a malformed, oversized, slow or wrongly typed request: its own 4xx
//     (400, 408, 413, 415 with Accept-Encoding);
//   - an invalid event: 400 with its index and field;
//   - a full queue, a closed aggregator or a failing store: 503 with Retry-After;
//   - a client that went away: 499 in the log, nothing useful to send;
//   - anything else: 500 "internal error", logged, never shown.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		reqErr  *requestError
		authErr *authError
		valErr  *eventagg.ValidationError
		status  int
		body    ErrorResponse
	)
	switch {
	case errors.As(err, &authErr):
		status, body.Error = http.StatusUnauthorized, authErr.Error()
		challenge := `Bearer realm="eventagg"`
		if authErr.presented {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
	case errors.As(err, &reqErr):
		status, body.Error, body.Field = reqErr.status, reqErr.msg, reqErr.field
		if reqErr.index >= 0 {
			body.Index = &reqErr.index
		}
	case errors.As(err, &valErr):
		status = http.StatusBadRequest
		body = ErrorResponse{Error: valErr.Error(), Index: &valErr.Index, Field: valErr.Field}
	case errors.Is(err, eventagg.ErrQueueFull):
		status, body.Error = http.StatusServiceUnavailable, "server busy: the publish queue is full; retry later"
	case errors.Is(err, eventagg.ErrClosed):
		status, body.Error = http.StatusServiceUnavailable, "server shutting down; retry later"
	case errors.Is(err, eventagg.ErrStore), errors.Is(err, eventagg.ErrDamaged), errors.Is(err, eventagg.ErrFull):
		status = http.StatusServiceUnavailable
		switch {
		case errors.Is(err, eventagg.ErrDamaged):
			body.Error = "store unavailable: it is damaged and refuses writes until repaired (see the server log)"
		case errors.Is(err, eventagg.ErrFull):
			body.Error = "store unavailable: no space left; retry later"
		default:
			body.Error = "store unavailable; retry later"
		}
		if r.Method == http.MethodPost {
			body.Error += "; nothing was stored"
		}
		h.log.LogAttrs(r.Context(), slog.LevelError, "store error", slog.String("path", mountPrefix(r)+r.URL.Path), slog.Any("error", err))
	case r.Context().Err() != nil:
		status, body.Error = 499, "client closed request" // nginx's convention; the client is gone
	default:
		status, body.Error = http.StatusInternalServerError, "internal error"
		h.log.LogAttrs(r.Context(), slog.LevelError, "internal error", slog.String("path", mountPrefix(r)+r.URL.Path), slog.Any("error", err))
	}
	switch status {
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	case http.StatusUnsupportedMediaType:
		w.Header().Set("Accept-Encoding", "gzip") // RFC 7694: the codings a request may use
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // only for values that cannot be JSON: a bug
		status, body = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
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
