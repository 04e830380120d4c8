package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/eventagg/eventagg"
)

// The codes of an [ErrorResponse]: what went wrong, for programs, with the
// status each comes with. [APIError.Unwrap] maps them back to the errors of
// package eventagg.
const (
	// CodeBadRequest (400): the request cannot be read: malformed JSON, a
	// body of the wrong shape, a bad query parameter.
	CodeBadRequest = "bad_request"
	// CodeInvalidEvent (400): an event of the batch is invalid; "index" and
	// "field" name it. The library's [eventagg.ErrInvalidEvent].
	CodeInvalidEvent = "invalid_event"
	// CodeUnauthorized (401): the bearer token is missing or wrong.
	CodeUnauthorized = "unauthorized"
	// CodeNotFound (404): no such endpoint.
	CodeNotFound = "not_found"
	// CodeMethodNotAllowed (405): the endpoint does not take the method;
	// the Allow header lists those it takes.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeTimeout (408): the request body did not arrive in time.
	CodeTimeout = "timeout"
	// CodeConflict (409): with conflicts rejected, an event of the batch
	// conflicts with the stored copy of its key; "index" names it and
	// "field" is "payload". The library's [eventagg.ErrConflict].
	CodeConflict = "conflict"
	// CodeTooLarge (413): the body, or its number of events, is over the limit.
	CodeTooLarge = "too_large"
	// CodeUnsupported (415): a Content-Type other than JSON, or a
	// Content-Encoding other than gzip.
	CodeUnsupported = "unsupported"
	// CodeClientClosed (499, logged only): the client went away.
	CodeClientClosed = "client_closed"
	// CodeInternal (500): a bug; the server logs the cause.
	CodeInternal = "internal"
	// CodeQueueFull (503): the publish queue is full. [eventagg.ErrQueueFull].
	CodeQueueFull = "queue_full"
	// CodeShuttingDown (503): the server is stopping. [eventagg.ErrClosed].
	CodeShuttingDown = "shutting_down"
	// CodeStoreUnavailable (503): the store failed. [eventagg.ErrStore].
	CodeStoreUnavailable = "store_unavailable"
	// CodeStoreFull (503): the store has no space left.
	// [eventagg.ErrStore] and [eventagg.ErrFull].
	CodeStoreFull = "store_full"
	// CodeStoreDamaged (503): the store is damaged and refuses writes until
	// repaired. [eventagg.ErrStore] and [eventagg.ErrDamaged].
	CodeStoreDamaged = "store_damaged"
	// CodeTooManyListings (503): too many GET /events answers are under way.
	CodeTooManyListings = "too_many_listings"
	// CodeTooManyFollowers (503): too many GET /events?follow=true streams
	// are under way.
	CodeTooManyFollowers = "too_many_followers"
	// CodeNotImplemented (501): the server cannot do what was asked (a
	// follow, with a backend that has no Tail).
	CodeNotImplemented = "not_implemented"
)

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"` // for people
	Code  string `json:"code"`  // for programs: one of the Code constants
	// Index is the position of the offending event in a publish request.
	Index *int `json:"index,omitempty"`
	// Field is the JSON field at fault, when known.
	Field string `json:"field,omitempty"`
}

// tooManyListings refuses a listing over [Options].MaxListings.
type tooManyListings struct{ max int }

func (e tooManyListings) Error() string {
	return fmt.Sprintf("too many listings under way (%d); retry later", e.max)
}

// writeError is the one place where errors become status codes and codes:
//   - a request without the bearer token it needs: 401 with WWW-Authenticate;
//   - a malformed, oversized, slow or wrongly typed request: its own 4xx
//     (400, 404, 405, 408, 413, 415 with Accept-Encoding);
//   - an invalid event: 400 with its index and field;
//   - a conflict, when conflicts are rejected: 409 with its index;
//   - a full queue, a closed aggregator, a failing store or too many
//     listings: 503 with Retry-After;
//   - a client that went away: 499 in the log, nothing useful to send;
//   - anything else: 500 "internal error", logged, never shown.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		reqErr    *requestError
		authErr   *authError
		valErr    *eventagg.ValidationError
		conflict  *eventagg.ConflictError
		listings  tooManyListings
		followers tooManyFollowers
		status    int
		body      ErrorResponse
	)
	switch {
	case errors.As(err, &authErr):
		status, body.Code, body.Error = http.StatusUnauthorized, CodeUnauthorized, authErr.Error()
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
		switch status {
		case http.StatusNotFound:
			body.Code = CodeNotFound
		case http.StatusMethodNotAllowed:
			body.Code = CodeMethodNotAllowed
		case http.StatusRequestTimeout:
			body.Code = CodeTimeout
		case http.StatusRequestEntityTooLarge:
			body.Code = CodeTooLarge
		case http.StatusUnsupportedMediaType:
			body.Code = CodeUnsupported
		case http.StatusNotImplemented:
			body.Code = CodeNotImplemented
		default:
			body.Code = CodeBadRequest
			if reqErr.index >= 0 && !reqErr.syntax { // one event is wrong, not the JSON
				body.Code = CodeInvalidEvent
			}
		}
	case errors.As(err, &valErr):
		status = http.StatusBadRequest
		body = ErrorResponse{Error: valErr.Error(), Code: CodeInvalidEvent, Index: &valErr.Index, Field: valErr.Field}
	case errors.As(err, &conflict):
		status = http.StatusConflict
		body = ErrorResponse{Error: conflict.Error() + "; nothing of the batch was stored", Code: CodeConflict, Index: &conflict.Index, Field: "payload"}
	case errors.As(err, &listings):
		status, body.Code, body.Error = http.StatusServiceUnavailable, CodeTooManyListings, listings.Error()
	case errors.As(err, &followers):
		status, body.Code, body.Error = http.StatusServiceUnavailable, CodeTooManyFollowers, followers.Error()
	case errors.Is(err, eventagg.ErrQueueFull):
		status, body.Code, body.Error = http.StatusServiceUnavailable, CodeQueueFull, "server busy: the publish queue is full; retry later"
	case errors.Is(err, eventagg.ErrClosed):
		status, body.Code, body.Error = http.StatusServiceUnavailable, CodeShuttingDown, "server shutting down; retry later"
	case errors.Is(err, eventagg.ErrStore), errors.Is(err, eventagg.ErrDamaged), errors.Is(err, eventagg.ErrFull):
		status = http.StatusServiceUnavailable
		switch {
		case errors.Is(err, eventagg.ErrDamaged):
			body.Code, body.Error = CodeStoreDamaged, "store unavailable: it is damaged and refuses writes until repaired (see the server log)"
		case errors.Is(err, eventagg.ErrFull):
			body.Code, body.Error = CodeStoreFull, "store unavailable: no space left; retry later"
		default:
			body.Code, body.Error = CodeStoreUnavailable, "store unavailable; retry later"
		}
		if r.Method == http.MethodPost {
			body.Error += "; nothing was stored, unless the store could not tell (a commit in doubt): resending is safe"
		}
		if ok, held := h.storeLog.Allow(); ok { // an outage fails every request: not a line each
			h.log.LogAttrs(r.Context(), slog.LevelError, "store error", slog.String("path", mountPrefix(r)+r.URL.Path), slog.Any("error", err),
				slog.Int("errors_not_logged", held))
		}
	case r.Context().Err() != nil:
		// nginx's convention; the client is gone
		status, body.Code, body.Error = 499, CodeClientClosed, "client closed request"
	default:
		status, body.Code, body.Error = http.StatusInternalServerError, CodeInternal, "internal error"
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

// APIError is an error answer from the server. It matches, with errors.Is
// and errors.As, the error of package eventagg that the server answered
// for: see [APIError.Unwrap].
type APIError struct {
	StatusCode int    // HTTP status
	Code       string // the "code" of the body (a Code constant), or "" if it has none
	Message    string // the "error" of the body
	Index      *int   // the offending event's position, for an invalid event or a conflict
	Field      string // the offending field, when known
	// RetryAfter is the wait the server asked for in a Retry-After header, or 0.
	RetryAfter time.Duration

	key eventagg.Key // of the event at Index, when the Client knows it
}

// Error implements the error interface.
func (e *APIError) Error() string {
	msg := fmt.Sprintf("eventagg server: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
	if e.Index != nil {
		msg += fmt.Sprintf(" (event %d", *e.Index)
		if e.Field != "" {
			msg += ", field " + e.Field
		}
		msg += ")"
	}
	return msg
}

// Temporary reports whether a retry may succeed: 429 and 5xx answers.
func (e *APIError) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// Unwrap returns the errors of package eventagg that the answer stands for,
// so that errors.Is and errors.As see through an APIError as they would
// through the error of [eventagg.Aggregator.Publish]:
//
//	invalid_event       *eventagg.ValidationError (Index, Field; Reason from the message)
//	conflict            *eventagg.ConflictError (Index; Key when Client.Publish sent the batch)
//	queue_full          eventagg.ErrQueueFull
//	shutting_down       eventagg.ErrClosed
//	store_unavailable   eventagg.ErrStore
//	store_full          eventagg.ErrStore and eventagg.ErrFull
//	store_damaged       eventagg.ErrStore and eventagg.ErrDamaged
//
// An answer without a known code (from a proxy, or an older server) is read
// by its status: a 400 naming an event's index and field is a
// *ValidationError and a 409 a conflict. A 503 without a code stands for
// none of them, since the status alone does not say which; it is still
// [APIError.Temporary]. Other codes stand for no error of package eventagg.
func (e *APIError) Unwrap() []error {
	code := e.Code
	switch code {
	case CodeInvalidEvent, CodeConflict, CodeQueueFull, CodeShuttingDown,
		CodeStoreUnavailable, CodeStoreFull, CodeStoreDamaged:
	default:
		code = ""
		switch {
		case e.StatusCode == http.StatusBadRequest && e.Index != nil && e.Field != "":
			code = CodeInvalidEvent
		case e.StatusCode == http.StatusConflict:
			code = CodeConflict
		}
	}
	switch code {
	case CodeInvalidEvent:
		if e.Index == nil {
			return []error{eventagg.ErrInvalidEvent}
		}
		return []error{&eventagg.ValidationError{Index: *e.Index, Field: e.Field, Reason: reason(e.Message, *e.Index, e.Field)}}
	case CodeConflict:
		if e.Index == nil {
			return []error{eventagg.ErrConflict}
		}
		return []error{&eventagg.ConflictError{Index: *e.Index, Key: e.key}}
	case CodeQueueFull:
		return []error{eventagg.ErrQueueFull}
	case CodeShuttingDown:
		return []error{eventagg.ErrClosed}
	case CodeStoreUnavailable:
		return []error{eventagg.ErrStore}
	case CodeStoreFull:
		return []error{eventagg.ErrStore, eventagg.ErrFull}
	case CodeStoreDamaged:
		return []error{eventagg.ErrStore, eventagg.ErrDamaged}
	}
	return nil
}

// reason returns the message of an invalid event's answer without the
// position and field that a ValidationError prints before its Reason.
func reason(msg string, index int, field string) string {
	for _, prefix := range []string{
		fmt.Sprintf("eventagg: event %d: %s: ", index, field), // the library's ValidationError
		fmt.Sprintf("event %d: ", index),                      // the request decoder's
	} {
		if r, ok := strings.CutPrefix(msg, prefix); ok {
			return r
		}
	}
	return msg
}
