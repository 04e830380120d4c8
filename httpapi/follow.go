package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/eventagg/eventagg"
)

// Defaults of [Options] for GET /events?follow=true.
const (
	DefaultMaxFollowers = 256              // follow streams at once
	DefaultHeartbeat    = 15 * time.Second // comment line on an idle stream
)

// followRetry is the reconnection delay the stream suggests to clients
// (the event stream's retry field), in milliseconds.
const followRetry = 1000

// Tailer is the optional capability of a [Backend] that GET
// /events?follow=true needs, as [*eventagg.Aggregator] has: a Backend
// without it answers follows with 501.
type Tailer interface {
	// Tail returns a Tail of the events q selects: see
	// [eventagg.Aggregator.Tail].
	Tail(q eventagg.Query) *eventagg.Tail
}

// errHeartbeat ends a wait of a follow stream when a heartbeat is due.
var errHeartbeat = errors.New("heartbeat due")

// tooManyFollowers refuses a follow over [Options].MaxFollowers.
type tooManyFollowers struct{ max int }

func (e tooManyFollowers) Error() string {
	return fmt.Sprintf("too many follow streams under way (%d); retry later", e.max)
}

// CloseFollows ends every GET /events?follow=true stream under way, each
// after the events it is writing, and answers later follows with 503. A
// server calls it when it shuts down (http.Server.Shutdown does not end
// streams, which never finish on their own), for example with
// srv.RegisterOnShutdown(h.CloseFollows). Shutting the Aggregator down
// ends them too, once they have sent every event it stored.
func (h *Handler) CloseFollows() { h.endFollows() }

// follow answers GET /events?follow=true: the events q selects as a
// server-sent event stream (WHATWG HTML, "Server-sent events"), each as
//
//	id: <seq>
//	data: <the event's JSON, as in a listing>
//
// then each new one as it becomes durable, with a comment line after
// Heartbeat without events. The Last-Event-ID header, which an EventSource
// sends when it reconnects, takes the place of after. The stream ends
// after q.Limit events if there is a limit, when the client goes away,
// at CloseFollows, or when the backend shuts down or fails.
func (h *Handler) follow(w http.ResponseWriter, r *http.Request, q eventagg.Query) {
	tailer, ok := h.agg.(Tailer)
	if !ok {
		h.writeError(w, r, &requestError{status: http.StatusNotImplemented, index: -1,
			msg: "this server cannot follow events: its backend has no Tail"})
		return
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil || n < 0 {
			h.writeError(w, r, badRequest(-1, "Last-Event-ID", "the Last-Event-ID header must be the seq of an event (an integer >= 0), not %q", id))
			return
		}
		q.After = n
	}
	select {
	case h.followers <- struct{}{}:
		defer func() { <-h.followers }()
	default:
		h.writeError(w, r, tooManyFollowers{max: cap(h.followers)})
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(h.followsCtx, cancel)()
	if h.followsCtx.Err() != nil {
		h.writeError(w, r, eventagg.ErrClosed)
		return
	}
	if err := h.agg.Ping(ctx); err != nil {
		h.writeError(w, r, err)
		return
	}
	h.metrics.following.Add(1)
	defer h.metrics.following.Add(-1)

	// (The server's read timeout does not end a follow: net/http lifts it
	// once the request is read. The write timeout is per write, and the
	// heartbeat writes well within it.)
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Accel-Buffering", "no") // proxies that buffer: do not
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	buf := append(make([]byte, 0, 4096), "retry: "+strconv.Itoa(followRetry)+"\n\n"...)
	if !h.send(w, rc, buf) {
		return
	}
	tail := tailer.Tail(q)
	left := q.Limit
	var page []eventagg.Event
	var js []byte
	for {
		wait, stop := context.WithTimeoutCause(ctx, h.opts.Heartbeat, errHeartbeat)
		var err error
		page, err = tail.Next(wait, page[:0])
		stop()
		buf = buf[:0]
		n := 0
		for i := range page {
			js = appendEvent(js[:0], &page[i])
			buf = appendSSE(buf, page[i].Seq, js)
			if n++; n == left {
				break
			}
		}
		clear(page) // let payloads go
		if len(buf) > 0 && !h.send(w, rc, buf) {
			return
		}
		if left > 0 {
			if left -= n; left == 0 {
				return
			}
		}
		switch {
		case err == nil:
		case ctx.Err() != nil: // the client went away, or CloseFollows
			return
		case errors.Is(context.Cause(wait), errHeartbeat):
			if !h.send(w, rc, []byte(": keep-alive\n\n")) {
				return
			}
		case errors.Is(err, eventagg.ErrClosed):
			return
		default:
			h.log.LogAttrs(r.Context(), slog.LevelError, "following events failed; the stream ends", slog.Any("error", err))
			return
		}
	}
}

// send writes b to the stream and flushes it, and reports whether both
// worked (the client is still there).
func (h *Handler) send(w http.ResponseWriter, rc *http.ResponseController, b []byte) bool {
	if _, err := w.Write(b); err != nil {
		return false
	}
	return rc.Flush() == nil
}

// appendSSE appends an event with id seq and data js to b, js's lines (a
// payload may hold line breaks) each its own data line: a receiver joins
// them with "\n", which JSON reads as the same whitespace.
func appendSSE(b []byte, seq int64, js []byte) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, "\ndata: "...)
	for {
		i := bytes.IndexAny(js, "\r\n")
		if i < 0 {
			b = append(b, js...)
			break
		}
		b = append(b, js[:i]...)
		if js[i] == '\r' && i+1 < len(js) && js[i+1] == '\n' {
			i++
		}
		js = js[i+1:]
		b = append(b, "\ndata: "...)
	}
	return append(b, "\n\n"...)
}
