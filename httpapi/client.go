package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/driver"
)

// ClientOptions configures [NewClient]. The zero value is the default.
type ClientOptions struct {
	// HTTPClient sends the requests; default a client with a 30s timeout.
	// Its Timeout does not cut a [Client.Follow] stream: there it bounds
	// the wait for the answer's headers and each silence of the stream.
	HTTPClient *http.Client
	// MaxAttempts bounds the tries of one call, the first included; default 8.
	// 1 disables retries.
	MaxAttempts int
	// MinBackoff is the wait before the first retry; default 100ms. Each
	// further retry doubles it, up to MaxBackoff (default 5s), with jitter.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Token, if set, is sent as "Authorization: Bearer <Token>".
	Token string
	// MaxFollowEventBytes bounds the JSON of one event that [Client.Follow]
	// accepts; default [DefaultMaxFollowEventBytes]. Raise it with the
	// server's [Options].MaxBodyBytes.
	MaxFollowEventBytes int
	// FollowState, if set, is called by [Client.Follow] as its connection
	// comes and goes: with nil each time a stream opens, and with the
	// reason each time an attempt fails or an open stream is lost, before
	// Follow waits to reconnect. See [Client.Follow].
	FollowState func(err error)
}

// Client talks to an eventagg server. It is the at-least-once producer:
// Publish retries network errors, 429 and 5xx answers with exponential
// backoff and jitter, honouring Retry-After, and resending is safe because
// the server deduplicates. It is an [eventagg.Publisher], so that code can
// publish to a server or to an [*eventagg.Aggregator] in process alike.
// A Client is safe for concurrent use.
type Client struct {
	base *url.URL
	http *http.Client
	opts ClientOptions
}

// NewClient returns a Client for the server at baseURL, such as
// "http://127.0.0.1:8080" (a path prefix is kept). opts may be nil.
func NewClient(baseURL string, opts *ClientOptions) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("httpapi: base URL must be http(s)://host[:port][/prefix], not %q", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c := &Client{base: u}
	if opts != nil {
		c.opts = *opts
	}
	c.http = c.opts.HTTPClient
	if c.http == nil {
		c.http = &http.Client{Timeout: 30 * time.Second}
	}
	if c.opts.MaxAttempts <= 0 {
		c.opts.MaxAttempts = 8
	}
	if c.opts.MinBackoff <= 0 {
		c.opts.MinBackoff = 100 * time.Millisecond
	}
	if c.opts.MaxBackoff <= 0 {
		c.opts.MaxBackoff = 5 * time.Second
	}
	c.opts.MaxBackoff = max(c.opts.MaxBackoff, c.opts.MinBackoff)
	if c.opts.MaxFollowEventBytes <= 0 {
		c.opts.MaxFollowEventBytes = DefaultMaxFollowEventBytes
	}
	return c, nil
}

// Publish sends events in one request and returns what the server did with
// them, as [eventagg.Aggregator.Publish] would in process: a *Client is an
// [eventagg.Publisher]. Payloads are sent byte for byte; an invalid one is
// refused by the server.
//
// The Result's Outcomes say, per event, Stored, Duplicate or Conflict (the
// request asks with ?duplicates=true); their Seq is 0, since the server
// does not send it. After a retry, the Result describes the last attempt
// only: an event that an earlier attempt stored (whose answer was lost) is
// a Duplicate.
//
// A 4xx answer other than 429 is returned at once as an [*APIError]; so is
// the last temporary failure when MaxAttempts is reached. The error matches
// what Aggregator.Publish would have returned (see [APIError.Unwrap]):
// errors.Is(err, eventagg.ErrQueueFull), errors.As(err, &conflict) with a
// *eventagg.ConflictError naming the event and its key, and so on.
func (c *Client) Publish(ctx context.Context, events ...eventagg.Event) (eventagg.Result, error) {
	body := append(make([]byte, 0, 128*len(events)), '[')
	for i := range events {
		if i > 0 {
			body = append(body, ',')
		}
		body = appendEvent(body, &events[i]) // payloads go byte for byte
	}
	body = append(body, ']')
	data, err := c.do(ctx, http.MethodPost, "/publish", url.Values{"duplicates": {"true"}}, body)
	if err != nil {
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.Index != nil && *apiErr.Index >= 0 && *apiErr.Index < len(events) {
			apiErr.key = events[*apiErr.Index].Key()
		}
		return eventagg.Result{}, err
	}
	var resp PublishResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return eventagg.Result{}, fmt.Errorf("httpapi: decoding publish answer: %w", err)
	}
	return resp.result(len(events))
}

// result returns the Result that resp, the answer to a publish of n events
// asked with ?duplicates=true, describes, or an error if it describes no
// batch of n events.
func (resp *PublishResponse) result(n int) (eventagg.Result, error) {
	res := eventagg.Result{Processed: resp.Processed, Duplicates: resp.Duplicates, Conflicts: resp.Conflicts,
		Outcomes: make([]eventagg.Outcome, n)}
	bad := func(why string) (eventagg.Result, error) {
		return eventagg.Result{}, fmt.Errorf("httpapi: the publish answer does not describe the %d events sent: %s", n, why)
	}
	if resp.Processed < 0 || resp.Processed+resp.Duplicates != n || len(resp.DuplicateIndexes) != resp.Duplicates ||
		len(resp.ConflictIndexes) != resp.Conflicts {
		return bad(fmt.Sprintf("%d processed, %d duplicates with %d indexes, %d conflicts with %d indexes",
			resp.Processed, resp.Duplicates, len(resp.DuplicateIndexes), resp.Conflicts, len(resp.ConflictIndexes)))
	}
	for i := range res.Outcomes {
		res.Outcomes[i].Status = eventagg.Stored
	}
	for _, i := range resp.DuplicateIndexes {
		if i < 0 || i >= n || res.Outcomes[i].Status != eventagg.Stored {
			return bad(fmt.Sprintf("duplicate index %d is out of range or repeated", i))
		}
		res.Outcomes[i].Status = eventagg.Duplicate
	}
	for _, i := range resp.ConflictIndexes {
		if i < 0 || i >= n || res.Outcomes[i].Status != eventagg.Duplicate {
			return bad(fmt.Sprintf("conflict index %d is not a duplicate index, or repeated", i))
		}
		res.Outcomes[i].Status = eventagg.Conflict
	}
	return res, nil
}

// Stats returns the server's counters.
func (c *Client) Stats(ctx context.Context) (StatsResponse, error) {
	var resp StatsResponse
	data, err := c.do(ctx, http.MethodGet, "/stats", nil, nil)
	if err != nil {
		return resp, err
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return resp, fmt.Errorf("httpapi: decoding stats: %w", err)
	}
	return resp, nil
}

// Health returns nil if the server answers GET /health with 200.
// It does not retry.
func (c *Client) Health(ctx context.Context) error {
	_, err := c.try(ctx, http.MethodGet, "/health", nil, nil)
	return err
}

// clientPage is how many events Client.Events asks for per request.
const clientPage = 1000

// Events lists the server's events matching q, in acceptance order, fetching
// pages of up to 1000 events. q.Limit, if positive, bounds the total.
// The sequence may be run more than once.
func (c *Client) Events(ctx context.Context, q eventagg.Query) iter.Seq2[eventagg.Event, error] {
	return driver.Paginate(q, clientPage, func(dst []eventagg.Event, after int64, n int) ([]eventagg.Event, error) {
		v := url.Values{"after": {strconv.FormatInt(after, 10)}, "limit": {strconv.Itoa(n)}}
		if q.Topic != "" {
			v.Set("topic", q.Topic)
		}
		data, err := c.do(ctx, http.MethodGet, "/events", v, nil)
		if err != nil {
			return dst, err
		}
		var page []eventagg.Event
		if err := json.Unmarshal(data, &page); err != nil {
			return dst, fmt.Errorf("httpapi: decoding events: %w", err)
		}
		return append(dst, page...), nil
	})
}

// do sends a request, retrying temporary failures, and returns the body of
// the first 2xx answer.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte) ([]byte, error) {
	for attempt := 1; ; attempt++ {
		data, err := c.try(ctx, method, path, query, body)
		if err == nil {
			return data, nil
		}
		var apiErr *APIError
		var retryAfter time.Duration
		switch {
		case ctx.Err() != nil:
			return nil, err
		case errors.As(err, &apiErr):
			if !apiErr.Temporary() {
				return nil, err
			}
			retryAfter = apiErr.RetryAfter
		}
		if attempt >= c.opts.MaxAttempts {
			return nil, fmt.Errorf("httpapi: giving up after %d attempts: %w", attempt, err)
		}
		wait := c.backoff(attempt)
		if retryAfter > 0 {
			wait = min(retryAfter, maxRetryAfter)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// maxRetryAfter caps how long a Retry-After answer can make the client wait.
const maxRetryAfter = time.Minute

// backoff returns the wait before retry number attempt (from 1): the
// exponential step, half of it fixed and half random.
func (c *Client) backoff(attempt int) time.Duration {
	step := c.opts.MinBackoff << min(attempt-1, 30)
	if step <= 0 || step > c.opts.MaxBackoff {
		step = c.opts.MaxBackoff
	}
	return step/2 + rand.N(step/2+1)
}

// newRequest returns a request for path under the base URL, with the
// query, the JSON body if not nil, and the token.
func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, body []byte) (*http.Request, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	}
	return req, nil
}

// try sends one request.
func (c *Client) try(ctx context.Context, method, path string, query url.Values, body []byte) ([]byte, error) {
	req, err := c.newRequest(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	limit := int64(maxAnswerBytes)
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		limit = maxErrorBytes // an error answer is short; only its start is read
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("httpapi: reading answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if int64(len(data)) > limit {
			return nil, fmt.Errorf("httpapi: the answer to %s %s is larger than %d bytes: not an eventagg server's", method, path, limit)
		}
		return data, nil
	}
	return nil, errorAnswer(resp, data[:min(int64(len(data)), limit)])
}

// maxAnswerBytes bounds the body of a successful answer that the Client
// reads whole: a page of events (at most [DefaultMaxPage] events, their
// payloads about [eventagg.PageBytes]) or /stats (a page of topics) is far
// smaller, so a larger one is refused rather than held in memory.
const maxAnswerBytes = 64 << 20

// errorAnswer returns the APIError that resp, an answer other than 2xx
// with the body data, stands for.
func errorAnswer(resp *http.Response, data []byte) *APIError {
	apiErr := &APIError{StatusCode: resp.StatusCode}
	var e ErrorResponse
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		apiErr.Code, apiErr.Message, apiErr.Index, apiErr.Field = e.Code, e.Error, e.Index, e.Field
	} else {
		apiErr.Message = strings.TrimSpace(string(data[:min(len(data), 200)]))
	}
	apiErr.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	return apiErr
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
