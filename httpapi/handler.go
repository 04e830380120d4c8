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
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/eventagg/eventagg"
)

// Defaults of [Options].
const (
	DefaultMaxBodyBytes = 16 << 20 // 16 MiB
	DefaultMaxBatch     = 10000    // events per request
	DefaultMaxPage      = 10000    // events per GET /events page with a limit
)

// Options configures [NewHandler]. The zero value is the default.
type Options struct {
	// MaxBodyBytes bounds a publish request body; larger bodies get 413.
	// Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxBatch bounds the events of one publish request; more get 413.
	// Default DefaultMaxBatch.
	MaxBatch int
	// MaxPage bounds the limit parameter of GET /events. Default DefaultMaxPage.
	MaxPage int
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
//	GET  /stats     counters, per topic, uptime
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
		h.writeError(w, r, &requestError{status: http.StatusNotFound, index: -1,
			msg: fmt.Sprintf("no such endpoint: %s (try POST /publish, GET /events, /stats, /health or /metrics)", r.URL.Path)})
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
			msg: fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, r.URL.Path, allow)})
	})
}

// ServeHTTP implements [http.Handler].
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.opts.Now()
	rec := &recorder{ResponseWriter: w, handler: "other", events: -1}
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
			slog.String("path", r.URL.Path),
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

// recorder remembers what a handler answered, for the access log and metrics.
type recorder struct {
	http.ResponseWriter
	status  int
	handler string // metrics label
	events  int    // events in a publish request; -1 if not one
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
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
	withIndexes, err := boolParam(r.URL.Query(), "duplicates")
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
	q, err := h.parseQuery(r.URL.Query())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if q.Limit == 0 {
		// No limit: stream everything, never holding more than the store's page.
		h.writeEvents(w, r, h.agg.Events(r.Context(), q))
		return
	}
	// With a limit, read one event past it to know whether a next page
	// exists, and link to it before the body starts.
	limit := q.Limit
	q.Limit++
	page := make([]eventagg.Event, 0, min(limit+1, 1024))
	for e, err := range h.agg.Events(r.Context(), q) {
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		page = append(page, e)
	}
	if len(page) > limit {
		page = page[:limit]
		next := url.Values{}
		if q.Topic != "" {
			next.Set("topic", q.Topic)
		}
		next.Set("after", strconv.FormatInt(page[limit-1].Seq, 10))
		next.Set("limit", strconv.Itoa(limit))
		u := url.URL{Path: r.URL.Path, RawQuery: next.Encode()}
		w.Header().Set("Link", "<"+u.String()+`>; rel="next"`)
	}
	h.writeEvents(w, r, func(yield func(eventagg.Event, error) bool) {
		for _, e := range page {
			if !yield(e, nil) {
				return
			}
		}
	})
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
			w.Header().Set("Content-Type", "application/json")
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
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("[]\n"))
		return
	}
	w.Write([]byte("\n]\n"))
}

func (h *Handler) parseQuery(v url.Values) (eventagg.Query, error) {
	var q eventagg.Query
	q.Topic = v.Get("topic")
	if s := v.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return q, badRequest(-1, "after", "after must be a sequence number (an integer >= 0), not %q", s)
		}
		q.After = n
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > h.opts.MaxPage {
			return q, badRequest(-1, "limit", "limit must be an integer from 1 to %d, not %q", h.opts.MaxPage, s)
		}
		q.Limit = n
	}
	return q, nil
}

// StatsResponse is the body of GET /stats.
type StatsResponse struct {
	eventagg.Stats
	UptimeSeconds float64 `json:"uptime_seconds"`
}

func (h *Handler) stats(w http.ResponseWriter, r *http.Request) {
	st, err := h.agg.Stats(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
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
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := h.agg.Ping(ctx); err != nil {
		h.log.LogAttrs(r.Context(), slog.LevelWarn, "health check failed", slog.Any("error", err))
		msg := "store unavailable"
		if errors.Is(err, eventagg.ErrClosed) {
			msg = "shutting down"
		}
		writeJSON(w, http.StatusServiceUnavailable, HealthResponse{Status: "unhealthy", Error: msg})
		return
	}
	writeJSON(w, http.StatusOK, HealthResponse{Status: "healthy"})
}

func (h *Handler) serveMetrics(w http.ResponseWriter, r *http.Request) {
	st, err := h.agg.Stats(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	var buf bytes.Buffer
	h.metrics.write(&buf, st, h.agg.QueueLen(), h.uptime())
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
	case errors.Is(err, eventagg.ErrStore):
		status, body.Error = http.StatusServiceUnavailable, "store unavailable; nothing was stored, retry later"
		h.log.LogAttrs(r.Context(), slog.LevelError, "store error", slog.String("path", r.URL.Path), slog.Any("error", err))
	case r.Context().Err() != nil:
		status, body.Error = 499, "client closed request" // nginx's convention; the client is gone
	default:
		status, body.Error = http.StatusInternalServerError, "internal error"
		h.log.LogAttrs(r.Context(), slog.LevelError, "internal error", slog.String("path", r.URL.Path), slog.Any("error", err))
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
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

func boolParam(v url.Values, name string) (bool, error) {
	s := v.Get(name)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, badRequest(-1, name, "%s must be true or false, not %q", name, s)
	}
	return b, nil
}
