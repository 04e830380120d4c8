package eventagg

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/eventagg/eventagg/internal/jsonscan"
)

// MaxKeyLen is the longest Topic, EventID or Source accepted, in bytes.
const MaxKeyLen = 255

// MaxPayloadDepth is the deepest nesting of arrays and objects accepted in a
// Payload: "[1]" is one level, {"a":[1]} two.
const MaxPayloadDepth = 64 // TestMaxPayloadDepth checks that the scanner can check as deep

// Event is one occurrence published by a producer.
//
// Its identity is the pair (Topic, EventID), compared byte for byte.
// The same EventID on two topics names two events.
type Event struct {
	// Topic groups events; 1 to 255 bytes of UTF-8 with no control characters.
	Topic string `json:"topic"`
	// EventID is unique within Topic; 1 to 255 bytes of UTF-8 with no control
	// characters, and not only white space.
	EventID string `json:"event_id"`
	// Timestamp is when the event happened (RFC 3339 on the wire).
	// A zero Timestamp is replaced with the time Publish received the event.
	// Stores keep it in UTC with nanosecond precision.
	Timestamp time.Time `json:"timestamp"`
	// Source optionally names the producer; at most 255 bytes of UTF-8 with no
	// control characters.
	Source string `json:"source,omitempty"`
	// Payload is any JSON value, stored and returned byte for byte (except
	// by an HTTP follow, whose event stream turns a "\r\n" or "\r" in the
	// JSON's whitespace into "\n").
	// An empty Payload means none. It must be I-JSON (RFC 7493): UTF-8
	// without lone surrogate escapes, no object with a repeated member name
	// (parsers disagree on which value wins), no number whose magnitude
	// overflows a float64 (such as 1e400), and at most [MaxPayloadDepth]
	// levels of nesting.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Seq is the sequence number the store assigned when it accepted the event.
	// Sequence numbers increase in acceptance order and serve as the cursor of
	// [Query.After]. Publish ignores it; it is set on events a store lists.
	Seq int64 `json:"seq,omitempty"`
}

// Key returns the event's identity.
func (e *Event) Key() Key { return Key{Topic: e.Topic, EventID: e.EventID} }

// Bounds of a storable Timestamp: stores keep it as nanoseconds since the Unix
// epoch in a signed 64-bit integer.
var (
	minTimestamp = time.Unix(0, math.MinInt64).UTC()
	maxTimestamp = time.Unix(0, math.MaxInt64).UTC()
)

// ErrInvalidEvent is matched, with [errors.Is], by every [*ValidationError].
var ErrInvalidEvent = errors.New("eventagg: invalid event")

// ValidationError reports why an event was rejected.
// A batch holding one invalid event is rejected whole: nothing of it is stored or counted.
type ValidationError struct {
	Index  int    // position of the event in the batch given to Publish
	Field  string // JSON name of the offending field: "topic", "event_id", "timestamp", "source" or "payload"
	Reason string // what is wrong, in a few words
}

// Error implements the error interface.
func (e *ValidationError) Error() string {
	return fmt.Sprintf("eventagg: event %d: %s: %s", e.Index, e.Field, e.Reason)
}

// Unwrap returns [ErrInvalidEvent], so that errors.Is(err, ErrInvalidEvent) holds.
func (e *ValidationError) Unwrap() error { return ErrInvalidEvent }

// Validate checks e as the event at position index of a batch.
// It returns nil or a [*ValidationError]. A zero Timestamp is valid.
func (e *Event) Validate(index int) error {
	if reason := checkName(e.Topic, true); reason != "" {
		return &ValidationError{Index: index, Field: "topic", Reason: reason}
	}
	if reason := checkName(e.EventID, true); reason != "" {
		return &ValidationError{Index: index, Field: "event_id", Reason: reason}
	}
	if strings.TrimSpace(e.EventID) == "" {
		return &ValidationError{Index: index, Field: "event_id", Reason: "is blank"}
	}
	if reason := checkName(e.Source, false); reason != "" {
		return &ValidationError{Index: index, Field: "source", Reason: reason}
	}
	if !e.Timestamp.IsZero() && (e.Timestamp.Before(minTimestamp) || e.Timestamp.After(maxTimestamp)) {
		return &ValidationError{Index: index, Field: "timestamp", Reason: "out of range (years 1678 to 2262)"}
	}
	if len(e.Payload) > 0 {
		if reason := checkPayload(e.Payload); reason != "" {
			return &ValidationError{Index: index, Field: "payload", Reason: reason}
		}
	}
	return nil
}

// checkPayload returns why p is not an acceptable payload, or "".
func checkPayload(p []byte) string {
	end, err := jsonscan.Value(p, 0, MaxPayloadDepth, true)
	if err == nil && jsonscan.SkipSpace(p, end) != len(p) {
		err = &jsonscan.Error{Kind: jsonscan.Syntax, Offset: end, Reason: "unexpected data after the JSON value"}
	}
	switch {
	case err == nil:
		return ""
	case err.Kind == jsonscan.Syntax:
		return "is not valid JSON: " + err.Error()
	}
	return err.Error()
}

// ValidateBatch validates every event of a batch and returns the first
// [*ValidationError], or nil if all are valid.
func ValidateBatch(events []Event) error {
	for i := range events {
		if err := events[i].Validate(i); err != nil {
			return err
		}
	}
	return nil
}

// checkName returns why s is not an acceptable topic, event ID or source, or "".
func checkName(s string, required bool) string {
	switch {
	case s == "" && required:
		return "is required"
	case len(s) > MaxKeyLen:
		return fmt.Sprintf("is %d bytes, over the limit of %d", len(s), MaxKeyLen)
	}
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return "is not valid UTF-8"
			}
		}
		if unicode.IsControl(r) {
			return fmt.Sprintf("contains control character %U at byte %d", r, i)
		}
	}
	return ""
}
