package httpapi

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/internal/jsonscan"
)

// requestError is a client error found while reading a request.
type requestError struct {
	status int
	msg    string
	index  int    // event index, or -1
	field  string // JSON field, or ""
	// fatal is set when the body as a whole is unacceptable (not JSON, not
	// UTF-8, too large), rather than one event in it.
	fatal bool
	// syntax is set when the body is not JSON.
	syntax bool
}

func (e *requestError) Error() string { return e.msg }

func badRequest(index int, field, format string, args ...any) *requestError {
	return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...), index: index, field: field}
}

func unsupported(format string, args ...any) *requestError {
	return &requestError{status: http.StatusUnsupportedMediaType, msg: fmt.Sprintf(format, args...), index: -1}
}

// checkBodyHeaders checks the Content-Type and Content-Encoding of a publish
// request and reports whether its body is gzipped.
//
// A missing Content-Type is taken as JSON; otherwise it must be
// application/json or an application/*+json type, in UTF-8.
// Content-Encoding may be gzip (or x-gzip) or identity.
func checkBodyHeaders(r *http.Request) (gzipped bool, err error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		switch {
		case err != nil:
			return false, unsupported("Content-Type %q is not a media type; send application/json", ct)
		case mt != "application/json" && !(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")):
			return false, unsupported("Content-Type must be application/json, not %s (with curl, add -H 'Content-Type: application/json')", mt)
		case params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8"):
			return false, unsupported("the body must be UTF-8, not charset %s", params["charset"])
		}
	}
	for _, v := range r.Header.Values("Content-Encoding") {
		for enc := range strings.SplitSeq(v, ",") {
			switch enc = strings.ToLower(strings.TrimSpace(enc)); {
			case enc == "identity" || enc == "":
			case (enc == "gzip" || enc == "x-gzip") && !gzipped:
				gzipped = true
			default:
				return false, unsupported("Content-Encoding %q is not supported; send the body as is or gzipped (Content-Encoding: gzip)", v)
			}
		}
	}
	return gzipped, nil
}

// readBody reads the whole request body, gunzipping it if gzipped. Either way
// at most limit bytes are read and kept: a longer body, before or after
// decompression, is an error with status 413.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, gzipped bool) ([]byte, error) {
	tooBig := func(what string) error {
		return &requestError{status: http.StatusRequestEntityTooLarge, index: -1,
			msg: fmt.Sprintf("%s is over the limit of %d bytes", what, limit)}
	}
	if r.ContentLength > limit {
		return nil, tooBig("request body")
	}
	var rd io.Reader = http.MaxBytesReader(w, r.Body, limit)
	hint := r.ContentLength
	if gzipped {
		zr, err := gzip.NewReader(rd)
		if err != nil {
			return nil, bodyError(err, tooBig)
		}
		// Read one byte past the limit to tell a body of exactly limit bytes
		// from a longer one.
		rd, hint = io.LimitReader(zr, limit+1), min(4*hint, limit)
	}
	body, err := readAll(rd, hint)
	switch {
	case err != nil:
		return nil, bodyError(err, tooBig)
	case int64(len(body)) > limit:
		return nil, tooBig("decompressed request body")
	}
	return body, nil
}

func bodyError(err error, tooBig func(string) error) error {
	var (
		maxErr  *http.MaxBytesError
		corrupt flate.CorruptInputError
	)
	switch {
	case errors.As(err, &maxErr):
		return tooBig("request body")
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &requestError{status: http.StatusRequestTimeout, index: -1, msg: "the request body did not arrive in time"}
	case errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum), errors.As(err, &corrupt):
		return badRequest(-1, "", "request body is not valid gzip: %v", err)
	}
	return badRequest(-1, "", "reading request body: %v", err)
}

// readAll reads r to the end into a buffer sized for hint bytes when hint is
// positive, so that a body of known length is read without copying. Up to
// 1 MiB is set aside before the bytes arrive: a client cannot make the
// server hold more memory than it sends by announcing a large body.
func readAll(r io.Reader, hint int64) ([]byte, error) {
	n := int64(512)
	if hint > 0 {
		n = min(hint+1, 1<<20) // +1: room to see EOF without growing
	}
	b := make([]byte, 0, n)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		m, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// decodeEvents parses a publish body: one event object, a JSON array of
// events, or {"events": [...]}. It returns at most maxBatch events, or an
// error naming the offending event's index when it can.
//
// It reads the body in one pass, without reflection, and is stricter than
// encoding/json: the body must be valid UTF-8 without lone surrogate
// escapes (encoding/json would silently turn them into U+FFFD, merging
// distinct IDs), and an event object may not give a field twice (which
// value wins would be a guess). As with encoding/json, field names also
// match case-insensitively, unknown fields are ignored, and null leaves a
// field empty. Payloads are kept as slices of body, byte for byte; their
// I-JSON rules are checked by [eventagg.Event.Validate].
func decodeEvents(body []byte, maxBatch int) ([]eventagg.Event, error) {
	d := decoder{data: body, maxBatch: maxBatch}
	i := jsonscan.SkipSpace(body, 0)
	if i == len(body) {
		return nil, badRequest(-1, "", "request body is empty; send an event object, an array of events or {\"events\":[...]}")
	}
	var err error
	switch body[i] {
	case '[':
		i, err = d.array(i)
	case '{':
		i, err = d.top(i)
	default:
		return nil, badRequest(-1, "", "request body must be a JSON event object, an array of events or {\"events\":[...]}")
	}
	if err != nil {
		return nil, err
	}
	if i = jsonscan.SkipSpace(body, i); i != len(body) {
		return nil, badRequest(-1, "", "malformed JSON at byte %d: unexpected data after the JSON value", i)
	}
	return d.events, nil
}

type decoder struct {
	data     []byte
	maxBatch int
	events   []eventagg.Event
	inArray  bool   // the error came from an array of events
	topic    string // the last topic decoded: batches often repeat it
	source   string // and the last source
	scratch  []byte // for unescaping
}

// Fields of an event object, as bits; fieldNames in the same order.
const (
	fTopic = 1 << iota
	fEventID
	fTimestamp
	fSource
	fPayload
	fSeq
	fEvents // only in the top-level object: {"events":[...]}

	eventFields = fEvents - 1 // every field of an event
)

var fieldNames = [...]string{"topic", "event_id", "timestamp", "source", "payload", "seq", "events"}

func fieldName(f int) string { return fieldNames[bits.TrailingZeros(uint(f))] }

// field returns the bit of the field that a member name sets, or 0 for a
// member that is ignored. As with encoding/json, an exact match is tried
// first, then a case-insensitive one.
func field(name []byte, top bool) int {
	switch string(name) {
	case "topic":
		return fTopic
	case "event_id":
		return fEventID
	case "timestamp":
		return fTimestamp
	case "source":
		return fSource
	case "payload":
		return fPayload
	case "seq":
		return fSeq
	}
	for i, f := range fieldNames {
		if bytes.EqualFold(name, []byte(f)) && (f != "events" || top) {
			return 1 << i
		}
	}
	return 0
}

// syntaxError reports JSON that cannot be read further.
func syntaxError(index int, offset int, format string, args ...any) *requestError {
	if offset >= 0 {
		format = "malformed JSON at byte " + strconv.Itoa(offset) + ": " + format
	} else {
		format = "malformed JSON: " + format
	}
	e := badRequest(index, "", format, args...)
	e.fatal, e.syntax = true, true
	return e
}

// scanError turns an error of the scanner, met in the value of field (or
// "") of event index (or -1), into a fatal requestError.
func scanError(index int, field string, err *jsonscan.Error) *requestError {
	if err.Kind == jsonscan.Syntax {
		e := syntaxError(index, err.Offset, "%s", err.Reason)
		e.field = field
		return e
	}
	where := "request body"
	if index >= 0 {
		where = "event " + strconv.Itoa(index)
	}
	if field != "" {
		where += ": " + field
	}
	e := badRequest(index, field, "%s: %v", where, err)
	e.fatal = true
	return e
}

func isFatal(err error) bool {
	var re *requestError
	return !errors.As(err, &re) || re.fatal
}

// jsonKind names the kind of the JSON value that data starts with.
func jsonKind(data []byte) string {
	switch data[0] {
	case '"':
		return "a JSON string"
	case '{':
		return "a JSON object"
	case '[':
		return "a JSON array"
	case 't', 'f':
		return "a JSON boolean"
	case 'n':
		return "null"
	}
	return "a JSON number"
}

// array decodes the array of events at data[i] into d.events.
func (d *decoder) array(i int) (int, error) {
	data := d.data
	i = jsonscan.SkipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		return i + 1, nil
	}
	for index := 0; ; index++ {
		if index == d.maxBatch {
			d.inArray = true
			return i, &requestError{status: http.StatusRequestEntityTooLarge, index: -1, fatal: true,
				msg: fmt.Sprintf("batch is over the limit of %d events", d.maxBatch)}
		}
		d.events = append(d.events, eventagg.Event{})
		var err error
		i = jsonscan.SkipSpace(data, i)
		switch {
		case i < len(data) && data[i] == '{':
			i, err = d.object(i, index, &d.events[len(d.events)-1], nil)
		case i < len(data) && data[i] == 'n': // null: an empty event, as with encoding/json
			i, err = d.skip(i, index, "")
		default:
			start := i
			if i, err = d.skip(i, index, ""); err == nil {
				err = badRequest(index, "", "event %d must be a JSON object, not %s", index, jsonKind(data[start:]))
			}
		}
		if err == nil {
			if i = jsonscan.SkipSpace(data, i); i >= len(data) {
				err = syntaxError(index, -1, "unexpected end of input")
			} else if data[i] != ',' && data[i] != ']' {
				err = syntaxError(index, i, "invalid character %q after an array element", data[i])
			}
		}
		if err != nil {
			d.inArray = true
			return i, err
		}
		if data[i] == ']' {
			return i + 1, nil
		}
		i++
	}
}

// top decodes the object that is the whole body: an event, or {"events":[...]}
// when it has an "events" member that is not null.
func (d *decoder) top(i int) (int, error) {
	var (
		e       eventagg.Event
		wrapper bool
	)
	i, err := d.object(i, 0, &e, &wrapper)
	var re *requestError
	switch {
	case err == nil && !wrapper:
		d.events = append(d.events, e)
	case errors.As(err, &re) && re.syntax && !d.inArray:
		re.index = -1 // not known to be an event
	}
	return i, err
}

// object decodes the event object at data[i] into e.
//
// For the top-level object, wrapper is not nil: a non-null "events" member
// is decoded into d.events and sets *wrapper, and then the other members
// are ignored, as are their errors unless fatal. Until the object ends it
// is not known which form it is, so those errors wait till then.
func (d *decoder) object(i, index int, e *eventagg.Event, wrapper *bool) (int, error) {
	data := d.data
	top := wrapper != nil
	var (
		seen     int     // fields given
		others   nameSet // names of the ignored members
		deferred error   // top only: the first error about an event field
	)
	i = jsonscan.SkipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, nil
	}
	for {
		name, end, err := d.name(i, index)
		if err != nil {
			return end, err
		}
		i = end
		f := field(name, top)
		switch {
		case f == 0:
			if others.add(name) {
				err = badRequest(index, "", "event %d: field %q is given twice", index, name)
			}
		case f == fEvents && seen&f != 0:
			return i, badRequest(-1, "events", `"events" is given twice, so the batch is ambiguous`)
		case seen&f != 0:
			err = badRequest(index, fieldName(f), "event %d: field %q is given twice, so its value is ambiguous", index, fieldName(f))
		}
		seen |= f
		if err == nil {
			i, err = d.member(i, index, f, e, wrapper)
		} else if top { // the error waits: skip the value
			var serr error
			if i, serr = d.skip(i, index, ""); serr != nil {
				return i, serr
			}
		}
		if err != nil {
			if !top || isFatal(err) {
				return i, err
			}
			if deferred == nil {
				deferred = err
			}
		}
		if i = jsonscan.SkipSpace(data, i); i >= len(data) {
			return i, syntaxError(index, -1, "unexpected end of input")
		}
		switch data[i] {
		case ',':
			i = jsonscan.SkipSpace(data, i+1)
		case '}':
			if top && *wrapper {
				if f := seen & eventFields; f != 0 {
					return i + 1, badRequest(-1, "events", `the body holds "events" and also the event field %q, so it is not clear what to publish: send one event, or {"events":[...]} without event fields`,
						fieldName(f))
				}
				return i + 1, nil
			}
			return i + 1, deferred
		default:
			return i, syntaxError(index, i, "invalid character %q after an object member", data[i])
		}
	}
}

// name reads the member name at data[i] and the colon after it, and returns
// the name unescaped and the index of the value.
func (d *decoder) name(i, index int) ([]byte, int, error) {
	data := d.data
	if i >= len(data) {
		return nil, i, syntaxError(index, -1, "unexpected end of input")
	}
	if data[i] != '"' {
		return nil, i, syntaxError(index, i, "invalid character %q looking for an object key", data[i])
	}
	end, escaped, serr := jsonscan.String(data, i)
	if serr != nil {
		return nil, end, scanError(index, "", serr)
	}
	name := data[i+1 : end-1]
	if escaped {
		name = jsonscan.Unescape(nil, name)
	}
	if i = jsonscan.SkipSpace(data, end); i >= len(data) {
		return nil, i, syntaxError(index, -1, "unexpected end of input")
	}
	if data[i] != ':' {
		return nil, i, syntaxError(index, i, "invalid character %q after an object key", data[i])
	}
	if i = jsonscan.SkipSpace(data, i+1); i >= len(data) {
		return nil, i, syntaxError(index, -1, "unexpected end of input")
	}
	return name, i, nil
}

// member decodes the value at data[i] of field f (0 for an ignored member).
func (d *decoder) member(i, index, f int, e *eventagg.Event, wrapper *bool) (end int, err error) {
	data := d.data
	switch f {
	case fTopic:
		e.Topic, end, err = d.str(i, index, f)
	case fEventID:
		e.EventID, end, err = d.str(i, index, f)
	case fSource:
		e.Source, end, err = d.str(i, index, f)
	case fTimestamp:
		if end, err = d.skip(i, index, "timestamp"); err != nil || data[i] == 'n' {
			return end, err // null leaves it zero
		}
		if data[i] != '"' {
			return end, badRequest(index, "timestamp", "event %d: timestamp must be an RFC 3339 string, like %q, not %s",
				index, "2026-11-25T12:00:00Z", jsonKind(data[i:]))
		}
		if terr := e.Timestamp.UnmarshalJSON(data[i:end]); terr != nil {
			return end, badRequest(index, "timestamp", "event %d: timestamp must be an RFC 3339 string, like %q (%v)",
				index, "2026-11-25T12:00:00Z", terr)
		}
		if e.Timestamp.IsZero() {
			// The zero time stands for "absent" in an Event: refuse it
			// rather than replace what the client stated.
			return end, badRequest(index, "timestamp", "event %d: timestamp %s is out of range (years 1678 to 2262)",
				index, data[i:end])
		}
	case fPayload:
		if end, err = d.skip(i, index, "payload"); err == nil {
			e.Payload = data[i:end:end] // no copy: the body is not reused
		}
	case fSeq: // Publish ignores it, but it must be an integer as ever
		if end, err = d.skip(i, index, "seq"); err == nil && data[i] != 'n' {
			if _, perr := strconv.ParseInt(string(data[i:end]), 10, 64); perr != nil {
				err = badRequest(index, "seq", "event %d: field \"seq\" must be a 64-bit integer, not %s", index, jsonKind(data[i:]))
			}
		}
	case fEvents:
		switch data[i] {
		case '[':
			*wrapper = true
			end, err = d.array(i)
			var re *requestError
			if errors.As(err, &re) {
				re.fatal = true // an event of the batch is at fault
			}
			return end, err
		}
		err := badRequest(-1, "events", `"events" must be an array of events, not %s`, jsonKind(data[i:]))
		err.fatal = true
		return i, err
	default:
		return d.skip(i, index, "")
	}
	return end, err
}

// str decodes the string or null at data[i] for field f.
func (d *decoder) str(i, index, f int) (string, int, error) {
	data := d.data
	if data[i] != '"' {
		end, err := d.skip(i, index, fieldName(f))
		if err == nil && data[i] != 'n' {
			err = badRequest(index, fieldName(f), "event %d: field %q must be a string, not %s", index, fieldName(f), jsonKind(data[i:]))
		}
		return "", end, err
	}
	end, escaped, serr := jsonscan.String(data, i)
	if serr != nil {
		return "", end, scanError(index, fieldName(f), serr)
	}
	raw := data[i+1 : end-1]
	if escaped {
		d.scratch = jsonscan.Unescape(d.scratch[:0], raw)
		raw = d.scratch
	}
	last := &d.topic
	switch f {
	case fSource:
		last = &d.source
	case fEventID:
		return string(raw), end, nil
	}
	if string(raw) != *last {
		*last = string(raw)
	}
	return *last, end, nil
}

// skip checks the JSON value at data[i], a member of field (or "") of event
// index (or -1), and returns the index past it.
func (d *decoder) skip(i, index int, field string) (int, error) {
	end, err := jsonscan.Value(d.data, i, eventagg.MaxPayloadDepth, false)
	if err != nil {
		return end, scanError(index, field, err)
	}
	return end, nil
}

// nameSet holds the names of the ignored members of an object, to find one
// given twice. It stays on the stack for objects with few such members.
type nameSet struct {
	small [8][]byte
	n     int
	big   map[string]struct{}
}

// add adds name and reports whether it was there already.
func (s *nameSet) add(name []byte) bool {
	if s.big == nil {
		for _, n := range s.small[:s.n] {
			if bytes.Equal(n, name) {
				return true
			}
		}
		if s.n < len(s.small) {
			s.small[s.n] = name
			s.n++
			return false
		}
		s.big = make(map[string]struct{}, 4*len(s.small))
		for _, n := range s.small {
			s.big[string(n)] = struct{}{}
		}
	}
	if _, ok := s.big[string(name)]; ok {
		return true
	}
	s.big[string(name)] = struct{}{}
	return false
}
