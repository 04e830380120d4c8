package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/eventagg/eventagg"
)

// DefaultMaxFollowEventBytes is the default of
// [ClientOptions].MaxFollowEventBytes: room for any event that a server
// with the default [Options].MaxBodyBytes stores, whose payload is at most
// the body, plus its other fields escaped.
const DefaultMaxFollowEventBytes = DefaultMaxBodyBytes + 64<<10

// Follow returns the events of q.Topic (all topics if empty) stored after
// q.After, then each new one as the server stores it, in acceptance order,
// as [eventagg.Aggregator.Follow] does in process. It reads GET
// /events?follow=true, a stream of server-sent events. The sequence ends
// when ctx ends (without an error), after q.Limit events if it is
// positive, or with an error that reconnecting would meet again.
//
// When the connection fails or the stream ends (the server restarted or
// shut down, or its store failed), and when the server answers 429 or 5xx
// (503: too many followers, shutting down), Follow reconnects, however
// long it takes, and resumes after the last event it yielded (the
// Last-Event-ID header). So the consumer sees every event once, in order,
// across server restarts; an event the server sends again is dropped. It
// waits between attempts as [Client.Publish] does, from MinBackoff (or the
// server's retry hint) doubling up to MaxBackoff, with jitter, and at least
// Retry-After when the server sends it; MaxAttempts does not apply. The
// wait starts over once a stream has delivered an event or stayed open for
// MaxBackoff.
//
// The HTTPClient's Timeout does not cut the stream: a stream on which
// nothing arrives for Timeout (not even the server's keep-alive comments,
// every 15s by default) is taken for lost, as when a connection dies
// without a word, and so is an answer whose headers take longer. A Timeout
// of 0 waits for ever.
//
// These errors end the sequence: an answer 4xx other than 429 (400 for a
// bad query, 401 for a missing or wrong token) or 501 (a server that
// cannot follow), as an [*APIError]; a 2xx answer that is not
// text/event-stream; an event whose JSON is malformed or over
// [ClientOptions].MaxFollowEventBytes. Follow holds at most about twice
// that per stream.
//
// To watch the connection, and to give up when the server has been out of
// reach for too long (by ending ctx), set [ClientOptions].FollowState.
// Follow calls it on the goroutine that ranges over the sequence, so it
// must not block: with nil each time a stream opens, and with the reason
// (an [*APIError], a network error, the end of the stream) each time an
// attempt fails or a stream is lost, before the wait.
//
// The sequence may be run more than once; each run starts after q.After.
// Stopping the range loop closes the stream.
func (c *Client) Follow(ctx context.Context, q eventagg.Query) iter.Seq2[eventagg.Event, error] {
	return func(yield func(eventagg.Event, error) bool) {
		hc := *c.http
		hc.Timeout = 0 // the stream lasts as long as ctx; f.silence bounds its pauses
		f := &follower{c: c, http: &hc, silence: c.http.Timeout, q: q, cursor: max(q.After, 0), left: q.Limit}
		f.run(ctx, yield)
	}
}

// follower is one run of a sequence that [Client.Follow] returned.
type follower struct {
	c       *Client
	http    *http.Client  // c's, without its Timeout
	silence time.Duration // the longest wait for the headers or the next bytes; 0: none
	q       eventagg.Query
	cursor  int64         // the Seq of the last event yielded, or q.After
	left    int           // events still to yield, if q.Limit is positive
	retry   time.Duration // the server's last retry hint, or 0
}

// permanent is an error that reconnecting would meet again: Follow yields
// what it holds and ends.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }

// streamEnd says how one stream of a follower ended.
type streamEnd struct {
	opened    time.Time // when its answer came, or zero if none did
	delivered int       // events yielded from it
	done      bool      // the consumer stopped, or the follower yielded q.Limit events
	err       error     // why it ended otherwise
}

// run opens streams and yields their events until ctx ends, the consumer
// stops, q.Limit events are yielded or an error is permanent.
func (f *follower) run(ctx context.Context, yield func(eventagg.Event, error) bool) {
	failures := 0
	for {
		s := f.stream(ctx, yield)
		if s.done || ctx.Err() != nil {
			return
		}
		var p permanent
		if errors.As(s.err, &p) {
			yield(eventagg.Event{}, p.err)
			return
		}
		if s.delivered > 0 || (!s.opened.IsZero() && time.Since(s.opened) >= f.c.opts.MaxBackoff) {
			failures = 0
		}
		failures++
		if fn := f.c.opts.FollowState; fn != nil {
			fn(s.err)
		}
		t := time.NewTimer(f.wait(failures, s.err))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// wait returns how long to wait after the failures-th failure in a row
// (from 1), err: the exponential step from the server's retry hint or
// MinBackoff, half of it fixed and half random; or, if the server asked
// for a Retry-After, that and up to half of it more, so that the followers
// it turned away do not all come back at once.
func (f *follower) wait(failures int, err error) time.Duration {
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.RetryAfter > 0 {
		ra := min(apiErr.RetryAfter, maxRetryAfter)
		return ra + rand.N(ra/2+1)
	}
	step := f.c.opts.MinBackoff
	if f.retry > 0 {
		step = f.retry
	}
	ceiling := max(f.c.opts.MaxBackoff, step)
	for i := 1; i < failures && step < ceiling; i++ {
		step *= 2
	}
	step = min(step, ceiling)
	return step/2 + rand.N(step/2+1)
}

// stream opens one stream and yields its new events until it ends.
func (f *follower) stream(ctx context.Context, yield func(eventagg.Event, error) bool) (s streamEnd) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var watchdog *time.Timer
	if f.silence > 0 {
		watchdog = time.AfterFunc(f.silence, func() {
			cancel(fmt.Errorf("httpapi: follow: nothing came from the server for %v, not even a keep-alive", f.silence))
		})
		defer watchdog.Stop()
	}
	resp, err := f.open(ctx)
	if err != nil {
		s.err = streamError(ctx, err)
		return s
	}
	defer resp.Body.Close()
	s.opened = time.Now()
	if fn := f.c.opts.FollowState; fn != nil {
		fn(nil)
	}
	body := io.Reader(resp.Body)
	if watchdog != nil {
		body = &watchedReader{r: body, t: watchdog, d: f.silence}
	}
	r := newSSEReader(body, f.c.opts.MaxFollowEventBytes)
	defer func() {
		if r.retry > 0 {
			f.retry = r.retry
		}
	}()
	for {
		data, id, err := r.next()
		if err != nil {
			s.err = streamError(ctx, err)
			return s
		}
		e, err := decodeStreamed(data, id)
		if err != nil {
			s.err = permanent{err}
			return s
		}
		if e.Seq <= f.cursor {
			continue // sent before; a consumer sees each event once
		}
		f.cursor = e.Seq
		if watchdog != nil {
			watchdog.Stop() // the consumer's time is not the server's silence
		}
		if !yield(e, nil) {
			s.done = true
			return s
		}
		if watchdog != nil {
			watchdog.Reset(f.silence)
		}
		s.delivered++
		if f.left > 0 {
			if f.left--; f.left == 0 {
				s.done = true
				return s
			}
		}
	}
}

// maxErrorBytes bounds the body of an error answer that Follow reads.
const maxErrorBytes = 64 << 10

// open sends the follow request and returns the answer if it is a stream.
func (f *follower) open(ctx context.Context) (*http.Response, error) {
	v := url.Values{"follow": {"true"}}
	if f.q.Topic != "" {
		v.Set("topic", f.q.Topic)
	}
	if f.q.After > 0 {
		v.Set("after", strconv.FormatInt(f.q.After, 10))
	}
	req, err := f.c.newRequest(ctx, http.MethodGet, "/events", v, nil)
	if err != nil {
		return nil, permanent{err}
	}
	req.Header.Set("Accept", "text/event-stream")
	if f.cursor > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(f.cursor, 10))
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		if err != nil {
			return nil, fmt.Errorf("httpapi: follow: reading the %d answer: %w", resp.StatusCode, err)
		}
		apiErr := errorAnswer(resp, data)
		if !apiErr.Temporary() || resp.StatusCode == http.StatusNotImplemented {
			return nil, permanent{apiErr}
		}
		return nil, apiErr
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, _ := mime.ParseMediaType(ct); mt != "text/event-stream" {
		resp.Body.Close()
		return nil, permanent{fmt.Errorf("httpapi: follow: the server answered %s with Content-Type %q, not text/event-stream", resp.Status, ct)}
	}
	return resp, nil
}

// streamError returns why a stream ended with err: the cause of ctx's end
// if it ended (the watchdog's, say), else err as Follow reports it.
func streamError(ctx context.Context, err error) error {
	var p permanent
	switch {
	case context.Cause(ctx) != nil:
		return context.Cause(ctx)
	case errors.As(err, &p):
		return err
	case err == io.EOF:
		return errors.New("httpapi: follow: the server ended the stream")
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return err
	}
	return fmt.Errorf("httpapi: follow: %w", err)
}

// decodeStreamed returns the event that the data and id of a server-sent
// event, its id if not empty.
func decodeStreamed(data, id []byte) (eventagg.Event, error) {
	var e eventagg.Event
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("httpapi: follow: decoding a streamed event: %w", err)
	}
	if len(id) > 0 {
		seq, err := strconv.ParseInt(string(id), 10, 64)
		switch {
		case err != nil || seq <= 0:
			return e, fmt.Errorf("httpapi: follow: a streamed event's id is %q, not a seq", id)
		case e.Seq == 0:
			e.Seq = seq
		case e.Seq != seq:
			return e, fmt.Errorf("httpapi: follow: a streamed event's id is %d but its seq %d", seq, e.Seq)
		}
	}
	if e.Seq <= 0 {
		return e, errors.New("httpapi: follow: a streamed event has no seq")
	}
	return e, nil
}

// watchedReader resets a timer each time bytes arrive.
type watchedReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (w *watchedReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if n > 0 {
		w.t.Reset(w.d)
	}
	return n, err
}

// sseReader reads an event stream (WHATWG HTML, "Server-sent events"):
// lines that end with \n, \r\n or \r, each a comment (":...") or a field
// ("name: value", the space optional, or "name" alone), a blank line
// ending each event.
type sseReader struct {
	r      *bufio.Reader
	max    int  // the most bytes of an event's data
	first  bool // no line read yet: a byte order mark may start the stream
	skipLF bool // the last line ended with \r, so a \n next ends none
	line   []byte
	// What the fields of the event being read said.
	data  []byte // its data lines, each with a \n after it
	event []byte // its type
	id    []byte // its id, if not empty
	// retry is the last reconnection time that the stream gave, or 0.
	retry time.Duration
}

func newSSEReader(r io.Reader, maxData int) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 32<<10), max: maxData, first: true}
}

// Bounds of what an sseReader keeps between events.
const (
	sseKeep     = 64 << 10 // bytes of a buffer
	sseMaxField = 16       // bytes of a line besides the data
)

// next returns the data of the next event of the default type
// ("message") and its id (empty if none), valid until the next call. As
// the spec says, an event without data is no event, one of another type
// is ignored, and one that the end of the stream cuts is dropped. An
// event over max bytes is a permanent error.
func (s *sseReader) next() (data, id []byte, err error) {
	s.reset()
	for {
		line, err := s.readLine()
		if err != nil {
			return nil, nil, err
		}
		if len(line) == 0 {
			if len(s.data) > 0 && (len(s.event) == 0 || string(s.event) == "message") {
				return s.data[:len(s.data)-1], s.id, nil
			}
			s.reset()
			continue
		}
		if line[0] == ':' {
			continue // a comment, such as a keep-alive
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value, _ = bytes.CutPrefix(value, []byte(" "))
		switch string(name) {
		case "data":
			if len(s.data)+len(value) > s.max {
				return nil, nil, s.tooLarge()
			}
			s.data = append(append(s.data, value...), '\n')
		case "event":
			s.event = append(s.event[:0], value...)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				s.id = append(s.id[:0], value...)
			}
		case "retry":
			if d, ok := parseRetry(value); ok {
				s.retry = d
			}
		}
	}
}

// reset forgets the event being read, and the memory a large one took.
func (s *sseReader) reset() {
	s.data, s.event, s.id = s.data[:0], s.event[:0], s.id[:0]
	if cap(s.data) > sseKeep {
		s.data = nil
	}
	if cap(s.line) > sseKeep {
		s.line = nil
	}
}

func (s *sseReader) tooLarge() error {
	return permanent{fmt.Errorf("httpapi: follow: the server sent an event over %d bytes (ClientOptions.MaxFollowEventBytes)", s.max)}
}

// readLine returns the next line without its end, valid until the next
// call. It returns the reader's error at the end of the stream, even
// after a line without its end; a line longer than an event can be is a
// permanent error. It returns a line as soon as its end arrives, without
// waiting for a \n that may follow a \r.
func (s *sseReader) readLine() ([]byte, error) {
	s.line = s.line[:0]
	for {
		if s.r.Buffered() == 0 {
			if _, err := s.r.Peek(1); err != nil {
				return nil, err
			}
		}
		buf, _ := s.r.Peek(s.r.Buffered())
		if s.skipLF {
			s.skipLF = false
			if buf[0] == '\n' {
				s.r.Discard(1)
				continue
			}
		}
		end := bytes.IndexAny(buf, "\r\n")
		n := end
		if end < 0 {
			n = len(buf)
		}
		if len(s.line)+n > s.max+sseMaxField {
			return nil, s.tooLarge()
		}
		s.line = append(s.line, buf[:n]...)
		if end < 0 {
			s.r.Discard(n)
			continue
		}
		s.skipLF = buf[end] == '\r'
		s.r.Discard(end + 1)
		if s.first {
			s.first = false
			s.line = bytes.TrimPrefix(s.line, []byte("\uFEFF"))
		}
		return s.line, nil
	}
}

// parseRetry reads the value of a retry field: milliseconds, in ASCII
// digits only, else it is ignored. It caps the delay at maxRetryAfter.
func parseRetry(v []byte) (time.Duration, bool) {
	if len(v) == 0 {
		return 0, false
	}
	const capMS = int64(maxRetryAfter / time.Millisecond)
	var ms int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		if ms <= capMS {
			ms = ms*10 + int64(c-'0')
		}
	}
	return time.Duration(min(ms, capMS)) * time.Millisecond, true
}
