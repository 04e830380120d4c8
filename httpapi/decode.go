package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/eventagg/eventagg"
)

// requestError is a client error found while reading a request.
type requestError struct {
	status int
	msg    string
	index  int    // event index, or -1
	field  string // JSON field, or ""
}

func (e *requestError) Error() string { return e.msg }

func badRequest(index int, field, format string, args ...any) *requestError {
	return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...), index: index, field: field}
}

// readBody reads the whole request body, up to limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &requestError{status: http.StatusRequestEntityTooLarge, index: -1,
			msg: fmt.Sprintf("request body is over the limit of %d bytes", tooBig.Limit)}
	case err != nil:
		return nil, badRequest(-1, "", "reading request body: %v", err)
	}
	return body, nil
}

// decodeEvents parses a publish body: one event object, a JSON array of
// events, or {"events": [...]}. It returns at most maxBatch events, or an
// error naming the offending event's index when it can.
func decodeEvents(body []byte, maxBatch int) ([]eventagg.Event, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, badRequest(-1, "", "request body is empty; send an event object, an array of events or {\"events\":[...]}")
	}
	switch trimmed[0] {
	case '[':
		return decodeArray(body, maxBatch)
	case '{':
		var wrapper struct {
			Events json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(body, &wrapper); err != nil {
			return nil, jsonError(-1, err)
		}
		if wrapper.Events != nil && !bytes.Equal(wrapper.Events, []byte("null")) {
			if t := bytes.TrimLeft(wrapper.Events, " \t\r\n"); len(t) == 0 || t[0] != '[' {
				return nil, badRequest(-1, "events", `"events" must be an array of events`)
			}
			return decodeArray(wrapper.Events, maxBatch)
		}
		var e eventagg.Event
		if err := json.Unmarshal(body, &e); err != nil {
			return nil, jsonError(0, err)
		}
		return []eventagg.Event{e}, nil
	}
	return nil, badRequest(-1, "", "request body must be a JSON event object, an array of events or {\"events\":[...]}")
}

// decodeArray decodes a JSON array of events one element at a time, so that
// an error names the element's index.
func decodeArray(data []byte, maxBatch int) ([]eventagg.Event, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // '['
		return nil, jsonError(-1, err)
	}
	var events []eventagg.Event
	for i := 0; dec.More(); i++ {
		if i == maxBatch {
			return nil, &requestError{status: http.StatusRequestEntityTooLarge, index: -1,
				msg: fmt.Sprintf("batch is over the limit of %d events", maxBatch)}
		}
		events = append(events, eventagg.Event{})
		if err := dec.Decode(&events[i]); err != nil {
			return nil, jsonError(i, err)
		}
	}
	if _, err := dec.Token(); err != nil { // ']'
		return nil, jsonError(-1, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest(-1, "", "unexpected data after the JSON value")
	}
	return events, nil
}

// jsonError turns a decoding error into a requestError with the event index
// and, for a wrong type, the field.
func jsonError(index int, err error) *requestError {
	var (
		syntax    *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		timeParse *time.ParseError
	)
	prefix := "malformed JSON"
	if index >= 0 {
		prefix = fmt.Sprintf("event %d", index)
	}
	switch {
	case errors.As(err, &syntax):
		return badRequest(index, "", "malformed JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return badRequest(index, "", "%s must be a JSON object, not a %s", prefix, typeErr.Value)
	case errors.As(err, &typeErr):
		return badRequest(index, typeErr.Field, "%s: field %q must be %s, not a JSON %s",
			prefix, typeErr.Field, jsonType(typeErr), typeErr.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badRequest(index, "", "malformed JSON: unexpected end of input")
	case errors.As(err, &timeParse), strings.HasPrefix(err.Error(), "Time.UnmarshalJSON"):
		return badRequest(index, "timestamp", "%s: timestamp must be an RFC 3339 string, like \"2026-11-25T12:00:00Z\" (%v)", prefix, err)
	}
	return badRequest(index, "", "%s: %v", prefix, err)
}

func jsonType(e *json.UnmarshalTypeError) string {
	switch e.Type.Kind().String() {
	case "string":
		return "a string"
	case "struct":
		if e.Type.String() == "time.Time" {
			return "an RFC 3339 string"
		}
		return "an object"
	}
	return e.Type.String()
}
