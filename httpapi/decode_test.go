package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/eventagg/eventagg"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The decoder is compared with refDecodeEvents, the encoding/json decoder it
// replaced: whatever it accepts, encoding/json decodes to the same events,
// and it rejects only what the documented rules reject.

// allowedDifference reports whether err rejects a body that encoding/json
// accepts for one of the documented reasons.
func allowedDifference(err error) bool {
	msg := err.Error()
	for _, reason := range []string{"invalid UTF-8", "lone UTF-16 surrogate", "is given twice", "nests deeper than",
		`"events" must be an array of events`, `holds "events" and also the event field`, "is out of range"} {
		if strings.Contains(msg, reason) {
			return true
		}
	}
	return false
}

var ignoreSeq = cmpopts.IgnoreFields(eventagg.Event{}, "Seq")

func checkDecode(t *testing.T, body []byte, maxBatch int) ([]eventagg.Event, error) {
	t.Helper()
	got, err := decodeEvents(body, maxBatch)
	want, refErr := refDecodeEvents(body, maxBatch)
	switch {
	case err == nil && refErr != nil:
		t.Fatalf("decodeEvents(%q) accepted what encoding/json rejects: %v", body, refErr)
	case err == nil:
		if diff := cmp.Diff(want, got, ignoreSeq, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("decodeEvents(%q) differs from encoding/json (-json +got):\n%s", body, diff)
		}
	case refErr == nil && !allowedDifference(err):
		t.Fatalf("decodeEvents(%q) = %v; encoding/json accepts it and no documented rule rejects it", body, err)
	}
	if err != nil {
		var re *requestError
		if !errors.As(err, &re) || re.status < 400 || re.status > 499 || re.msg == "" {
			t.Fatalf("decodeEvents(%q) error %#v is not a 4xx requestError with a message", body, err)
		}
	}
	return got, err
}

func TestDecodeEventsAgreesWithEncodingJSON(t *testing.T) {
	for _, body := range []string{
		`{"topic":"a","event_id":"1","timestamp":"2026-11-25T10:00:00.123456789+02:00","source":"s","payload":{"x":[1,2.5e3,"é"]}}`,
		` [ {"topic":"a","event_id":"1"} , null, {"topic":"\u00e9\ud83d\ude00","event_id":"\"\\\/\b\f\n\r\t"} ] `,
		`{"events":[{"topic":"a","event_id":"1","payload":null}]}`,
		`{"events":[],"x":5}`,
		`{"EVENTS":[{"Topic":"a","EVENT_ID":"1","ſource":"s"}]}`,
		`[{"topic":null,"event_id":null,"timestamp":null,"source":null,"seq":null}]`,
		`[{"topic":"a","event_id":"1","seq":-0,"unknown":{"deep":[[[]]]},"u2":[1e400]}]`,
		`[{"topic":"a","event_id":"1","payload":  "  spaced  "  }]`,
		`{"topic":"a","event_id":"1","x":1,"X":2}`,
		`[]`,
		`{}`,
	} {
		if _, err := checkDecode(t, []byte(body), 16); err != nil {
			t.Errorf("decodeEvents(%s) = %v, want it accepted", body, err)
		}
	}
}

func TestDecodeEventsStricterThanEncodingJSON(t *testing.T) {
	for _, tt := range []struct {
		body, msg string
		index     int
		field     string
	}{
		{"{\"topic\":\"a\xffb\",\"event_id\":\"1\"}", "event 0: topic: invalid UTF-8", 0, "topic"},
		{"[{\"topic\":\"a\",\"event_id\":\"1\"},{\"topic\":\"a\",\"event_id\":\"\xc3\"}]", "event 1: event_id: invalid UTF-8", 1, "event_id"},
		{"{\"topic\":\"a\",\"event_id\":\"1\",\"payload\":\"\xed\xa0\x80\"}", "event 0: payload: invalid UTF-8", 0, "payload"},
		{"{\"topic\":\"a\",\"event_id\":\"1\",\"x\xff\":1}", "invalid UTF-8", 0, ""},
		{`{"topic":"a","event_id":"\ud800"}`, "lone UTF-16 surrogate", 0, "event_id"},
		{`{"topic":"a","event_id":"1","topic":"b"}`, `field "topic" is given twice`, 0, "topic"},
		{`[{"topic":"a","event_id":"1","Event_ID":"2"}]`, `field "event_id" is given twice`, 0, "event_id"},
		{`[{"topic":"a","event_id":"1","x":1,"x":2}]`, `field "x" is given twice`, 0, ""},
		{`{"events":[{"topic":"a","event_id":"1"}],"events":[{"topic":"a","event_id":"2"}]}`, `"events" is given twice`, -1, "events"},
		{`[{"topic":"a","event_id":"1","payload":` + strings.Repeat("[", 65) + strings.Repeat("]", 65) + `}]`, "payload: nests deeper than 64 levels", 0, "payload"},
		{`[{"topic":"a","event_id":"1","extra":` + strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65) + `}]`, "nests deeper than 64 levels", 0, ""},
		// What the client states is not replaced, nor is part of it dropped.
		{`{"events":null}`, `"events" must be an array of events, not null`, -1, "events"},
		{`{"events":null,"topic":"a","event_id":"1"}`, `"events" must be an array of events, not null`, -1, "events"},
		{`{"events":[],"topic":5}`, `holds "events" and also the event field "topic"`, -1, "events"},
		{`{"topic":"a","event_id":"1","events":[{"topic":"b","event_id":"2"}]}`, `holds "events" and also the event field "topic"`, -1, "events"},
		{`{"payload":{},"events":[{"topic":"b","event_id":"2"}]}`, `holds "events" and also the event field "payload"`, -1, "events"},
		{`{"topic":"a","event_id":"1","timestamp":"0001-01-01T00:00:00Z"}`, `timestamp "0001-01-01T00:00:00Z" is out of range`, 0, "timestamp"},
		{`[{"topic":"a","event_id":"1"},{"topic":"a","event_id":"2","timestamp":"0001-01-01T00:00:00.000Z"}]`, `event 1: timestamp "0001-01-01T00:00:00.000Z" is out of range`, 1, "timestamp"},
	} {
		body := []byte(tt.body)
		if _, err := refDecodeEvents(body, 16); err != nil {
			t.Fatalf("encoding/json rejects %q (%v): not a case of stricter decoding", body, err)
		}
		_, err := checkDecode(t, body, 16)
		var re *requestError
		if !errors.As(err, &re) || re.status != 400 || !strings.Contains(re.msg, tt.msg) || re.index != tt.index || re.field != tt.field {
			t.Errorf("decodeEvents(%q) = %#v, want 400 at index %d, field %q saying %q", body, err, tt.index, tt.field, tt.msg)
		}
	}
}

// FuzzDecodeEvents checks the publish body decoder and the handler on any
// body: no panic; a body is either refused with a 4xx JSON error and nothing
// counted, or answered 200 with processed + duplicates == the number of
// events; and the decoder agrees with encoding/json (see checkDecode).
func FuzzDecodeEvents(f *testing.F) {
	for _, seed := range []string{
		`{"topic":"orders","event_id":"o-1","timestamp":"2026-11-25T10:00:00Z","source":"shop","payload":{"total":42}}`,
		`[{"topic":"a","event_id":"1"},{"topic":"a","event_id":"1"},{"topic":"b","event_id":"1"}]`,
		`{"events":[{"topic":"a","event_id":"2"},{"topic":"a","event_id":"3"}]}`,
		`{"topic":"a\u0000b","event_id":"x"}`,
		"{\"topic\":\"a\xffb\",\"event_id\":\"x\"}",
		`{"topic":"a","event_id":"\udc00"}`,
		`{"topic":"a","event_id":"1","payload":{"n":1e400}}`,
		`{"topic":"a","event_id":"1","payload":{"a":1,"a":2}}`,
		`{"topic":"a","event_id":"1","topic":"b"}`,
		`{"topic":"a","event_id":"1","payload":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`,
		`[{"topic":"a","event_id":"1","seq":"x"}]`,
		`{"topic":"a","event_id":"1","timestamp":"yesterday"}`,
		`{"events":{"topic":"a"}}`,
		`[null, 5, "x"]`,
		"\ufeff[]",
		`[{"topic":"` + strings.Repeat("t", 256) + `","event_id":"1"}]`,
		`[{"topic":"a","event_id":"1"}] []`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		const maxBatch = 16
		events, err := checkDecode(t, body, maxBatch)

		store := eventagg.NewMemoryStore()
		agg, aerr := eventagg.New(store, nil)
		if aerr != nil {
			t.Fatal(aerr)
		}
		defer store.Close()
		defer agg.Close()
		h := NewHandler(agg, &Options{MaxEventsPerRequest: maxBatch})
		req := httptest.NewRequest("POST", "/publish", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		st, serr := agg.Stats(t.Context())
		if serr != nil {
			t.Fatal(serr)
		}
		if rec.Code != http.StatusOK {
			var e ErrorResponse
			if rec.Code < 400 || rec.Code > 499 || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
				t.Fatalf("POST %q = %d %s; want 200 or a 4xx JSON error", body, rec.Code, rec.Body)
			}
			if st.Received != 0 {
				t.Fatalf("POST %q = %d, yet %d events were counted", body, rec.Code, st.Received)
			}
			return
		}
		if err != nil {
			t.Fatalf("POST %q = 200, but decodeEvents says %v", body, err)
		}
		var resp PublishResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Processed+resp.Duplicates != len(events) || st.Received != int64(len(events)) || st.UniqueProcessed != int64(resp.Processed) {
			t.Fatalf("POST %q = %+v, stats %+v; want %d events accounted", body, resp, st.Counts, len(events))
		}
		for i := range events {
			if !utf8.ValidString(events[i].Topic) || !utf8.ValidString(events[i].EventID) || !utf8.Valid(events[i].Payload) {
				t.Fatalf("POST %q stored an event that is not valid UTF-8: %+v", body, events[i])
			}
		}
	})
}

// The decoder this package used before: encoding/json, kept as the reference.

// decodeEvents parses a publish body: one event object, a JSON array of
// events, or {"events": [...]}. It returns at most maxBatch events, or an
// error naming the offending event's index when it can.
func refDecodeEvents(body []byte, maxBatch int) ([]eventagg.Event, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, badRequest(-1, "", "request body is empty; send an event object, an array of events or {\"events\":[...]}")
	}
	switch trimmed[0] {
	case '[':
		return refDecodeArray(body, maxBatch)
	case '{':
		var wrapper struct {
			Events json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(body, &wrapper); err != nil {
			return nil, refJSONError(-1, err)
		}
		if wrapper.Events != nil && !bytes.Equal(wrapper.Events, []byte("null")) {
			if t := bytes.TrimLeft(wrapper.Events, " \t\r\n"); len(t) == 0 || t[0] != '[' {
				return nil, badRequest(-1, "events", `"events" must be an array of events`)
			}
			return refDecodeArray(wrapper.Events, maxBatch)
		}
		var e eventagg.Event
		if err := json.Unmarshal(body, &e); err != nil {
			return nil, refJSONError(0, err)
		}
		return []eventagg.Event{e}, nil
	}
	return nil, badRequest(-1, "", "request body must be a JSON event object, an array of events or {\"events\":[...]}")
}

// decodeArray decodes a JSON array of events one element at a time, so that
// an error names the element's index.
func refDecodeArray(data []byte, maxBatch int) ([]eventagg.Event, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // '['
		return nil, refJSONError(-1, err)
	}
	var events []eventagg.Event
	for i := 0; dec.More(); i++ {
		if i == maxBatch {
			return nil, &requestError{status: http.StatusRequestEntityTooLarge, index: -1,
				msg: fmt.Sprintf("batch is over the limit of %d events", maxBatch)}
		}
		events = append(events, eventagg.Event{})
		if err := dec.Decode(&events[i]); err != nil {
			return nil, refJSONError(i, err)
		}
	}
	if _, err := dec.Token(); err != nil { // ']'
		return nil, refJSONError(-1, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest(-1, "", "unexpected data after the JSON value")
	}
	return events, nil
}

// jsonError turns a decoding error into a requestError with the event index
// and, for a wrong type, the field.
func refJSONError(index int, err error) *requestError {
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
			prefix, typeErr.Field, refJSONType(typeErr), typeErr.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badRequest(index, "", "malformed JSON: unexpected end of input")
	case errors.As(err, &timeParse), strings.HasPrefix(err.Error(), "Time.UnmarshalJSON"):
		return badRequest(index, "timestamp", "%s: timestamp must be an RFC 3339 string, like \"2026-11-25T12:00:00Z\" (%v)", prefix, err)
	}
	return badRequest(index, "", "%s: %v", prefix, err)
}

func refJSONType(e *json.UnmarshalTypeError) string {
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

// batchBody is a publish body of n events, the shape the server sees most.
func batchBody(n int) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"topic":"orders","event_id":"order-%d","timestamp":"2026-11-25T10:00:00Z","source":"shop",`+
			`"payload":{"total":%d.5,"currency":"EUR","items":[{"sku":"A-%d","qty":2},{"sku":"B","qty":1}],"note":"caf\u00e9"}}`, i, i, i)
	}
	b.WriteByte(']')
	return b.Bytes()
}

func BenchmarkDecodeEvents(b *testing.B) {
	body := batchBody(1000)
	for _, bm := range []struct {
		name   string
		decode func([]byte, int) ([]eventagg.Event, error)
	}{{"OnePass", decodeEvents}, {"EncodingJSON", refDecodeEvents}} {
		b.Run(bm.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bm.decode(body, 10000); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
