package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/google/go-cmp/cmp"
)

// server is a Handler over a MemoryStore-backed Aggregator.
type server struct {
	agg   *eventagg.Aggregator
	store eventagg.Store
	h     *httpapi.Handler
}

func newServer(t *testing.T, store eventagg.Store, aggOpts *eventagg.Options, opts *httpapi.Options) *server {
	t.Helper()
	if store == nil {
		store = eventagg.NewMemoryStore()
	}
	agg, err := eventagg.New(store, aggOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agg.Close(); store.Close() })
	return &server{agg: agg, store: store, h: httpapi.NewHandler(agg, opts)}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (s *server) do(t *testing.T, method, target, body string) response {
	t.Helper()
	return s.doWith(t, method, target, body, "Content-Type", "application/json")
}

// doWith is do with the request headers given as name, value, ... (and no
// Content-Type unless one of them).
func (s *server) doWith(t *testing.T, method, target, body string, header ...string) response {
	t.Helper()
	var rd *strings.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	var req *http.Request
	if rd != nil {
		req = httptest.NewRequestWithContext(t.Context(), method, target, rd)
	} else {
		req = httptest.NewRequestWithContext(t.Context(), method, target, nil)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	checkedHandler(t, s.h).ServeHTTP(rec, req) // and checked against openapi.json
	return response{rec.Code, rec.Header(), rec.Body.Bytes()}
}

// decode unmarshals the body into v, failing the test if it is not JSON.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("body %q is not the expected JSON: %v", r.body, err)
	}
}

func (s *server) stats(t *testing.T) eventagg.Stats {
	t.Helper()
	st, err := s.agg.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestPublishBodyForms(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	tests := []struct {
		name, body string
		want       httpapi.PublishResponse
	}{
		{"Object", `{"topic":"a","event_id":"1","timestamp":"2026-11-25T10:00:00Z","source":"s","payload":{"x":1}}`,
			httpapi.PublishResponse{Processed: 1}},
		// a/1 again, without the payload it was stored with: a conflict;
		// a/2 twice alike: a duplicate.
		{"Array", `[{"topic":"a","event_id":"1"},{"topic":"a","event_id":"2"},{"topic":"a","event_id":"2"}]`,
			httpapi.PublishResponse{Processed: 1, Duplicates: 2, Conflicts: 1}},
		{"Wrapper", ` {"events":[{"topic":"b","event_id":"1"},{"topic":"a","event_id":"3"}]} `,
			httpapi.PublishResponse{Processed: 2}},
		{"EmptyArray", `[]`, httpapi.PublishResponse{}},
		{"UnknownFieldsIgnored", `{"topic":"c","event_id":"1","extra":[1,2],"seq":99}`,
			httpapi.PublishResponse{Processed: 1}},
	}
	for _, tt := range tests {
		resp := s.do(t, "POST", "/publish", tt.body)
		if resp.status != http.StatusOK {
			t.Fatalf("%s: status %d, body %s", tt.name, resp.status, resp.body)
		}
		var got httpapi.PublishResponse
		resp.decode(t, &got)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: answer mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
	// The body is exactly the contract's three fields.
	resp := s.do(t, "POST", "/publish", `{"topic":"a","event_id":"1"}`)
	if got := strings.TrimSpace(string(resp.body)); got != `{"processed_count":0,"duplicate_dropped":1,"conflicts":1}` {
		t.Errorf("publish body = %s", got)
	}
	st := s.stats(t)
	if want := (eventagg.Counts{Received: 8, UniqueProcessed: 5, DuplicateDropped: 3, Conflicts: 2, Stored: 5}); st.Counts != want {
		t.Errorf("Stats() = %+v, want %+v", st.Counts, want)
	}
}

func TestPublishDuplicateIndexes(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	s.do(t, "POST", "/publish", `{"topic":"a","event_id":"1"}`)
	resp := s.do(t, "POST", "/publish?duplicates=true", `[{"topic":"a","event_id":"1"},{"topic":"a","event_id":"2"},{"topic":"a","event_id":"2"}]`)
	var got httpapi.PublishResponse
	resp.decode(t, &got)
	want := httpapi.PublishResponse{Processed: 1, Duplicates: 2, DuplicateIndexes: []int{0, 2}, ConflictIndexes: []int{}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("answer mismatch (-want +got):\n%s", diff)
	}
	// Asked for, the lists are there even when empty; not asked for, absent.
	for target, body := range map[string]string{
		"/publish?duplicates=true":  `{"processed_count":1,"duplicate_dropped":0,"conflicts":0,"duplicate_indexes":[],"conflict_indexes":[]}`,
		"/publish?duplicates=false": `{"processed_count":1,"duplicate_dropped":0,"conflicts":0}`,
	} {
		id := strings.TrimPrefix(target, "/publish?duplicates=")
		if got := strings.TrimSpace(string(s.do(t, "POST", target, `{"topic":"b","event_id":"`+id+`"}`).body)); got != body {
			t.Errorf("POST %s = %s, want %s", target, got, body)
		}
	}
}

// TestPublishConflicts resends ids with other payloads: they are dropped
// and counted as conflicts, a part of the duplicates, and listed apart.
func TestPublishConflicts(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	s.do(t, "POST", "/publish", `{"topic":"a","event_id":"1","payload":{"v":1}}`)
	resp := s.do(t, "POST", "/publish?duplicates=true", `[
		{"topic":"a","event_id":"1","payload":{"v":1}},
		{"topic":"a","event_id":"1","payload":{"v": 1}},
		{"topic":"b","event_id":"1","payload":{"v":1}},
		{"topic":"b","event_id":"1","payload":{"v":2}},
		{"topic":"b","event_id":"1","payload":{"v":1}}
	]`)
	var got httpapi.PublishResponse
	resp.decode(t, &got)
	want := httpapi.PublishResponse{Processed: 1, Duplicates: 4, Conflicts: 2,
		DuplicateIndexes: []int{0, 1, 3, 4}, ConflictIndexes: []int{1, 3}} // byte for byte: a space differs
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("answer mismatch (-want +got):\n%s", diff)
	}
	st := s.stats(t)
	if want := (eventagg.Counts{Received: 6, UniqueProcessed: 2, DuplicateDropped: 4, Conflicts: 2, Stored: 2}); st.Counts != want {
		t.Errorf("Stats() = %+v, want %+v", st.Counts, want)
	}
	for topic, want := range map[string]eventagg.Counts{
		"a": {Received: 3, UniqueProcessed: 1, DuplicateDropped: 2, Conflicts: 1, Stored: 1},
		"b": {Received: 3, UniqueProcessed: 1, DuplicateDropped: 2, Conflicts: 1, Stored: 1},
	} {
		if st.Topics[topic] != want {
			t.Errorf("Stats().Topics[%s] = %+v, want %+v", topic, st.Topics[topic], want)
		}
	}
	// The first copies are the ones kept.
	var events []eventagg.Event
	s.do(t, "GET", "/events", "").decode(t, &events)
	for _, e := range events {
		if string(e.Payload) != `{"v":1}` {
			t.Errorf("stored %s/%s with payload %s, want the first copy's {\"v\":1}", e.Topic, e.EventID, e.Payload)
		}
	}
}

// TestPublishRejectedConflict publishes a conflict to an Aggregator that
// rejects them: 409 naming the event, and nothing of the batch is stored.
func TestPublishRejectedConflict(t *testing.T) {
	s := newServer(t, nil, &eventagg.Options{RejectConflicts: true}, nil)
	s.do(t, "POST", "/publish", `{"topic":"a","event_id":"1","payload":{"v":1}}`)
	before := s.stats(t)
	resp := s.do(t, "POST", "/publish", `[{"topic":"b","event_id":"1"},{"topic":"a","event_id":"1","payload":{"v":1}},{"topic":"a","event_id":"1","payload":{"v":2}}]`)
	var body httpapi.ErrorResponse
	resp.decode(t, &body)
	if resp.status != http.StatusConflict || body.Code != httpapi.CodeConflict || body.Index == nil || *body.Index != 2 ||
		body.Field != "payload" || !strings.Contains(body.Error, `event_id "1"`) || !strings.Contains(body.Error, "nothing of the batch was stored") {
		t.Errorf("a conflicting batch = %d %s; want 409 conflict naming event 2, field payload", resp.status, resp.body)
	}
	if st := s.stats(t); st.Counts != before.Counts {
		t.Errorf("after the refused batch Stats() = %+v, want %+v: nothing stored or counted", st.Counts, before.Counts)
	}
	if got := parseProm(t, string(s.do(t, "GET", "/metrics", "").body))["eventagg_publish_rejected_total"]; got != 1 {
		t.Errorf("eventagg_publish_rejected_total = %v after a refused conflict, want 1", got)
	}
	// An identical copy is no conflict.
	resp = s.do(t, "POST", "/publish", `[{"topic":"b","event_id":"1"},{"topic":"a","event_id":"1","payload":{"v":1}}]`)
	if got := strings.TrimSpace(string(resp.body)); resp.status != 200 || got != `{"processed_count":1,"duplicate_dropped":1,"conflicts":0}` {
		t.Errorf("a batch without conflicts = %d %s", resp.status, got)
	}
}

func TestPublishRejects(t *testing.T) {
	valid := `{"topic":"a","event_id":"ok"}`
	tests := []struct {
		name   string
		body   string
		status int
		index  *int
		field  string
		msg    string // part of the error message
		code   string
	}{
		{"Empty", "", 400, nil, "", "empty", "bad_request"},
		{"Malformed", `{"topic":`, 400, nil, "", "malformed JSON", "bad_request"},
		{"MalformedInArray", `[` + valid + `,{"topic":"a",]`, 400, ptr(1), "", "malformed JSON", "bad_request"},
		{"TrailingData", `[` + valid + `] []`, 400, nil, "", "after the JSON value", "bad_request"},
		{"TrailingObject", valid + ` {}`, 400, nil, "", "malformed JSON", "bad_request"},
		{"NotAnObject", `"hello"`, 400, nil, "", "event object", "bad_request"},
		{"Number", `42`, 400, nil, "", "event object", "bad_request"},
		{"EventsNotArray", `{"events":{"topic":"a"}}`, 400, nil, "events", "array", "bad_request"},
		{"EventsNull", `{"events":null}`, 400, nil, "events", `"events" must be an array of events, not null`, "bad_request"},
		{"EventsAndEventFields", `{"topic":"a","event_id":"outer","events":[` + valid + `]}`, 400, nil, "events", `also the event field "topic"`, "bad_request"},
		{"ZeroTimestamp", `[` + valid + `,{"topic":"a","event_id":"x","timestamp":"0001-01-01T00:00:00Z"}]`, 400, ptr(1), "timestamp", "out of range", "invalid_event"},
		{"TopicWrongType", `[` + valid + `,{"topic":5,"event_id":"x"}]`, 400, ptr(1), "topic", "must be a string", "invalid_event"},
		{"BadTimestamp", `[` + valid + `,{"topic":"a","event_id":"x","timestamp":"yesterday"}]`, 400, ptr(1), "timestamp", "RFC 3339", "invalid_event"},
		{"TimestampNumber", `{"topic":"a","event_id":"x","timestamp":1700000000}`, 400, ptr(0), "timestamp", "RFC 3339", "invalid_event"},
		{"MissingEventID", `[` + valid + `,` + valid + `,{"topic":"a"}]`, 400, ptr(2), "event_id", "required", "invalid_event"},
		{"BlankEventID", `{"topic":"a","event_id":"   "}`, 400, ptr(0), "event_id", "blank", "invalid_event"},
		{"NULInTopic", `{"topic":"a\u0000b","event_id":"x"}`, 400, ptr(0), "topic", "control character", "invalid_event"},
		{"LongTopic", `{"topic":"` + strings.Repeat("t", 256) + `","event_id":"x"}`, 400, ptr(0), "topic", "over the limit", "invalid_event"},
		{"BadDuplicatesParam", valid, 400, nil, "duplicates", "true or false", "bad_request"},
		{"TooManyEvents", `[` + strings.Repeat(valid+",", 3) + valid + `]`, 413, nil, "", "limit of 3 events", "too_large"},
		{"BodyTooLarge", `[` + strings.Repeat(" ", 600) + valid + `]`, 413, nil, "", "limit of 512 bytes", "too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, nil, nil, &httpapi.Options{MaxEventsPerRequest: 3, MaxBodyBytes: 512})
			target := "/publish"
			if tt.name == "BadDuplicatesParam" {
				target += "?duplicates=maybe"
			}
			resp := s.do(t, "POST", target, tt.body)
			if resp.status != tt.status {
				t.Fatalf("status = %d, want %d; body %s", resp.status, tt.status, resp.body)
			}
			var got httpapi.ErrorResponse
			resp.decode(t, &got)
			if !strings.Contains(got.Error, tt.msg) {
				t.Errorf("error = %q, want it to contain %q", got.Error, tt.msg)
			}
			if diff := cmp.Diff(tt.index, got.Index); diff != "" {
				t.Errorf("index mismatch (-want +got):\n%s", diff)
			}
			if got.Field != tt.field {
				t.Errorf("field = %q, want %q", got.Field, tt.field)
			}
			if got.Code != tt.code {
				t.Errorf("code = %q, want %q", got.Code, tt.code)
			}
			if st := s.stats(t); st.Received != 0 || len(st.Topics) != 0 {
				t.Errorf("a rejected request was counted: %+v", st)
			}
		})
	}
}

func ptr(i int) *int { return &i }

func TestMethodsAndPaths(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/publish", 405, "POST"},
		{"PUT", "/publish", 405, "POST"},
		{"POST", "/stats", 405, "GET, HEAD"},
		{"DELETE", "/events", 405, "GET, HEAD"},
		{"POST", "/health", 405, "GET, HEAD"},
		{"POST", "/metrics", 405, "GET, HEAD"},
		{"GET", "/nope", 404, ""},
		{"GET", "/", 404, ""},
		{"GET", "/publish/extra", 404, ""},
	}
	codes := map[int]string{404: httpapi.CodeNotFound, 405: httpapi.CodeMethodNotAllowed}
	for _, tt := range tests {
		resp := s.do(t, tt.method, tt.path, "")
		if resp.status != tt.status || resp.header.Get("Allow") != tt.allow {
			t.Errorf("%s %s = %d Allow %q; want %d Allow %q", tt.method, tt.path, resp.status, resp.header.Get("Allow"), tt.status, tt.allow)
		}
		var body httpapi.ErrorResponse
		resp.decode(t, &body)
		if body.Error == "" || body.Code != codes[tt.status] {
			t.Errorf("%s %s: error body %s; want an \"error\" and code %q", tt.method, tt.path, resp.body, codes[tt.status])
		}
	}
}

// publishN publishes events 0..n-1 on topic, in batches of 100.
func publishN(t *testing.T, s *server, topic string, n int) {
	t.Helper()
	for from := 0; from < n; from += 100 {
		var batch []eventagg.Event
		for i := from; i < min(from+100, n); i++ {
			batch = append(batch, eventagg.Event{Topic: topic, EventID: strconv.Itoa(i), Payload: json.RawMessage(`{"i":` + strconv.Itoa(i) + `}`)})
		}
		if _, err := s.agg.Publish(t.Context(), batch...); err != nil {
			t.Fatal(err)
		}
	}
}

func ids(events []eventagg.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Topic + "/" + e.EventID
	}
	return out
}

func TestEventsListing(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	if _, err := s.agg.Publish(t.Context(),
		eventagg.Event{Topic: "a", EventID: "1", Payload: json.RawMessage(` {"keep" : "spacing"}`)},
		eventagg.Event{Topic: "b", EventID: "1"},
		eventagg.Event{Topic: "a", EventID: "2"},
		eventagg.Event{Topic: "a", EventID: "3"},
	); err != nil {
		t.Fatal(err)
	}
	list := func(target string) ([]eventagg.Event, response) {
		t.Helper()
		resp := s.do(t, "GET", target, "")
		if resp.status != 200 {
			t.Fatalf("GET %s = %d %s", target, resp.status, resp.body)
		}
		var events []eventagg.Event
		resp.decode(t, &events)
		return events, resp
	}
	all, resp := list("/events")
	if diff := cmp.Diff([]string{"a/1", "b/1", "a/2", "a/3"}, ids(all)); diff != "" {
		t.Errorf("GET /events mismatch (-want +got):\n%s", diff)
	}
	if resp.header.Get("Link") != "" {
		t.Errorf("unlimited listing has a Link header %q", resp.header.Get("Link"))
	}
	if !bytes.Contains(resp.body, []byte(`"payload": {"keep" : "spacing"}`)) {
		t.Errorf("payload not served byte for byte: %s", resp.body)
	}
	for _, e := range all {
		if e.Seq <= 0 || e.Timestamp.IsZero() {
			t.Errorf("listed event %+v lacks seq or timestamp", e)
		}
	}

	// Pages of 2 on topic a, following Link, a reference relative to the
	// request's URL.
	var got []string
	target := "/events?topic=a&limit=2"
	for pages := 0; target != ""; pages++ {
		if pages > 3 {
			t.Fatal("Link pagination does not end")
		}
		page, resp := list(target)
		got = append(got, ids(page)...)
		base := target
		target = ""
		if link := resp.header.Get("Link"); link != "" {
			m := regexp.MustCompile(`^<([^>]+)>; rel="next"$`).FindStringSubmatch(link)
			if m == nil {
				t.Fatalf("Link header %q is not <url>; rel=\"next\"", link)
			}
			target = resolve(t, base, m[1])
		}
	}
	if diff := cmp.Diff([]string{"a/1", "a/2", "a/3"}, got); diff != "" {
		t.Errorf("paged listing mismatch (-want +got):\n%s", diff)
	}
	// A page that holds the rest exactly has no next link.
	if _, resp := list("/events?topic=a&limit=3"); resp.header.Get("Link") != "" {
		t.Errorf("last page has Link %q", resp.header.Get("Link"))
	}
	after, _ := list("/events?after=" + strconv.FormatInt(all[1].Seq, 10))
	if diff := cmp.Diff([]string{"a/2", "a/3"}, ids(after)); diff != "" {
		t.Errorf("GET /events?after mismatch (-want +got):\n%s", diff)
	}
	if empty, resp := list("/events?topic=none"); len(empty) != 0 || strings.TrimSpace(string(resp.body)) != "[]" {
		t.Errorf("GET /events?topic=none = %s, want []", resp.body)
	}
}

// resolve resolves the URI reference ref against the request target base.
func resolve(t *testing.T, base, ref string) string {
	t.Helper()
	b, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	r, err := url.Parse(ref)
	if err != nil {
		t.Fatalf("Link target %q: %v", ref, err)
	}
	return b.ResolveReference(r).String()
}

func TestEventsBadParams(t *testing.T) {
	s := newServer(t, nil, nil, &httpapi.Options{MaxPage: 50})
	for _, q := range []string{"after=x", "after=-1", "limit=0", "limit=-3", "limit=51", "limit=ten"} {
		resp := s.do(t, "GET", "/events?"+q, "")
		var body httpapi.ErrorResponse
		resp.decode(t, &body)
		if resp.status != 400 || body.Error == "" || body.Field == "" {
			t.Errorf("GET /events?%s = %d %s; want 400 naming the parameter", q, resp.status, resp.body)
		}
	}
}

func TestEventsStreamsEverything(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	publishN(t, s, "bulk", 1300) // more than one store page
	resp := s.do(t, "GET", "/events", "")
	var events []eventagg.Event
	resp.decode(t, &events)
	if len(events) != 1300 {
		t.Fatalf("streamed %d events, want 1300", len(events))
	}
	for i, e := range events {
		if e.EventID != strconv.Itoa(i) {
			t.Fatalf("event %d has id %s: out of order", i, e.EventID)
		}
	}
}

func TestStatsEndpoint(t *testing.T) {
	start := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	now := start
	clock := func() time.Time { return now }
	s := newServer(t, nil, &eventagg.Options{Now: clock}, &httpapi.Options{Now: clock})
	s.do(t, "POST", "/publish", `[{"topic":"a","event_id":"1"},{"topic":"a","event_id":"1"},{"topic":"b","event_id":"1"},{"topic":"a","event_id":"1","payload":1}]`)
	now = start.Add(90*time.Second + 500*time.Millisecond)
	resp := s.do(t, "GET", "/stats", "")
	var got map[string]any
	resp.decode(t, &got)
	want := map[string]any{
		"received": 4.0, "unique_processed": 2.0, "duplicate_dropped": 2.0, "conflicts": 1.0, "stored": 2.0, "expired": 0.0,
		"topics": map[string]any{
			"a": map[string]any{"received": 3.0, "unique_processed": 1.0, "duplicate_dropped": 2.0, "conflicts": 1.0, "stored": 1.0, "expired": 0.0},
			"b": map[string]any{"received": 1.0, "unique_processed": 1.0, "duplicate_dropped": 0.0, "conflicts": 0.0, "stored": 1.0, "expired": 0.0},
		},
		"topic_count":    2.0,
		"started_at":     "2026-11-25T08:00:00Z",
		"claims":         map[string]any{"active": 0.0, "expired": 0.0},
		"uptime_seconds": 90.5,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /stats mismatch (-want +got):\n%s", diff)
	}
}

func TestHealth(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	var body httpapi.HealthResponse
	resp := s.do(t, "GET", "/health", "")
	resp.decode(t, &body)
	if resp.status != 200 || body != (httpapi.HealthResponse{Status: "healthy"}) {
		t.Errorf("GET /health = %d %s, want 200 healthy", resp.status, resp.body)
	}
	s.store.Close()
	resp = s.do(t, "GET", "/health", "")
	resp.decode(t, &body)
	if resp.status != 503 || body.Status != "unhealthy" || body.Error == "" || body.Code != httpapi.CodeShuttingDown {
		t.Errorf("GET /health with a closed store = %d %s, want 503 unhealthy, shutting_down", resp.status, resp.body)
	}

	s = newServer(t, nil, nil, nil)
	s.agg.Close()
	resp = s.do(t, "GET", "/health", "")
	resp.decode(t, &body)
	if resp.status != 503 || body.Error != "shutting down" || body.Code != httpapi.CodeShuttingDown {
		t.Errorf("GET /health after Close = %d %s, want 503 shutting down", resp.status, resp.body)
	}
}

// faultyStore fails every Append.
type faultyStore struct{ eventagg.Store }

func (faultyStore) Append(context.Context, []eventagg.Event, eventagg.AppendOptions) ([]eventagg.Outcome, error) {
	return nil, errors.New("disk I/O error: /var/lib/secret/path")
}

func TestUnavailableAnswers503(t *testing.T) {
	check := func(t *testing.T, resp response, msg string) {
		t.Helper()
		var body httpapi.ErrorResponse
		resp.decode(t, &body)
		code := map[string]string{
			"store unavailable": httpapi.CodeStoreUnavailable,
			"shutting down":     httpapi.CodeShuttingDown,
			"queue is full":     httpapi.CodeQueueFull,
		}[msg]
		if resp.status != 503 || resp.header.Get("Retry-After") == "" || !strings.Contains(body.Error, msg) || body.Code != code {
			t.Errorf("answer = %d Retry-After %q %s; want 503 with Retry-After saying %q, code %q",
				resp.status, resp.header.Get("Retry-After"), resp.body, msg, code)
		}
		if strings.Contains(string(resp.body), "secret") {
			t.Errorf("the answer leaks the internal error: %s", resp.body)
		}
	}
	t.Run("StoreFails", func(t *testing.T) {
		s := newServer(t, faultyStore{eventagg.NewMemoryStore()}, nil, nil)
		check(t, s.do(t, "POST", "/publish", `{"topic":"a","event_id":"1"}`), "store unavailable")
		if st := s.stats(t); st.Received != 0 {
			t.Errorf("failed publish counted: %+v", st.Counts)
		}
	})
	t.Run("Closed", func(t *testing.T) {
		s := newServer(t, nil, nil, nil)
		s.agg.Close()
		check(t, s.do(t, "POST", "/publish", `{"topic":"a","event_id":"1"}`), "shutting down")
	})
	t.Run("StoreClosedForReads", func(t *testing.T) {
		s := newServer(t, nil, nil, nil)
		s.store.Close()
		check(t, s.do(t, "GET", "/events", ""), "shutting down")
		check(t, s.do(t, "GET", "/stats", ""), "shutting down")
	})
	t.Run("QueueFull", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			gate := &gateStore{Store: eventagg.NewMemoryStore(), gate: make(chan struct{})}
			s := newServer(t, gate, &eventagg.Options{QueueSize: 1, QueueTimeout: 100 * time.Millisecond}, nil)
			done := make(chan response, 2)
			for i := range 2 { // one held by the writer, one filling the queue
				go func() { done <- s.do(t, "POST", "/publish", `{"topic":"a","event_id":"`+strconv.Itoa(i)+`"}`) }()
				synctest.Wait()
			}
			check(t, s.do(t, "POST", "/publish", `{"topic":"a","event_id":"x"}`), "queue is full")
			close(gate.gate)
			for range 2 {
				if resp := <-done; resp.status != 200 {
					t.Errorf("queued publish = %d %s", resp.status, resp.body)
				}
			}
		})
	})
}

// gateStore holds every Append until gate is closed.
type gateStore struct {
	eventagg.Store
	gate chan struct{}
}

func (g *gateStore) Append(ctx context.Context, events []eventagg.Event, opts eventagg.AppendOptions) ([]eventagg.Outcome, error) {
	<-g.gate
	return g.Store.Append(ctx, events, opts)
}

var (
	promHelp   = regexp.MustCompile(`^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*$`)
	promType   = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$`)
	promSample = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*\})? (\S+)$`)
)

// parseProm checks text against the Prometheus text format (0.0.4) and returns
// its samples, keyed by name and labels.
func parseProm(t *testing.T, text string) map[string]float64 {
	t.Helper()
	samples := make(map[string]float64)
	typed := make(map[string]string)
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if m := promHelp.FindStringSubmatch(line); m != nil {
			continue
		}
		if m := promType.FindStringSubmatch(line); m != nil {
			if _, dup := typed[m[1]]; dup {
				t.Errorf("metric %s typed twice", m[1])
			}
			typed[m[1]] = m[2]
			continue
		}
		m := promSample.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("line %q is not in the Prometheus text format", line)
			continue
		}
		family := m[1]
		if typed[family] == "" {
			family = regexp.MustCompile(`_(bucket|sum|count)$`).ReplaceAllString(family, "")
		}
		if typed[family] == "" {
			t.Errorf("sample %q comes before its # TYPE line", line)
		}
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			t.Errorf("sample %q: value: %v", line, err)
		}
		samples[m[1]+m[2]] = v
	}
	return samples
}

func TestMetrics(t *testing.T) {
	s := newServer(t, nil, nil, &httpapi.Options{MaxBodyBytes: 1024})
	s.do(t, "POST", "/publish", `[{"topic":"a","event_id":"1"},{"topic":"a","event_id":"1"}]`)
	s.do(t, "POST", "/publish", `{"topic":"a","event_id":"2"}`)
	s.do(t, "POST", "/publish", `{"topic":"a","event_id":"2","payload":2}`) // a conflict
	s.do(t, "POST", "/publish", `{"topic":""}`)                             // invalid event: 400
	s.do(t, "POST", "/publish", `{`)                                        // malformed: 400
	s.do(t, "POST", "/publish", "["+strings.Repeat(" ", 2000)+"]")          // too large: 413
	req := httptest.NewRequestWithContext(t.Context(), "POST", "/publish", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "text/plain")
	checkedHandler(t, s.h).ServeHTTP(httptest.NewRecorder(), req) // wrong type: 415
	s.do(t, "GET", "/nope", "")
	resp := s.do(t, "GET", "/metrics", "")
	if resp.status != 200 || !strings.HasPrefix(resp.header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics = %d %q", resp.status, resp.header.Get("Content-Type"))
	}
	got := parseProm(t, string(resp.body))
	for name, want := range map[string]float64{
		"eventagg_events_received_total":                             4,
		"eventagg_events_unique_total":                               2,
		"eventagg_events_duplicate_total":                            2,
		"eventagg_events_conflict_total":                             1,
		"eventagg_publish_rejected_total":                            4,
		"eventagg_queue_depth":                                       0,
		`eventagg_http_requests_total{handler="publish",code="200"}`: 3,
		`eventagg_http_requests_total{handler="publish",code="400"}`: 2,
		`eventagg_http_requests_total{handler="publish",code="413"}`: 1,
		`eventagg_http_requests_total{handler="publish",code="415"}`: 1,
		`eventagg_http_requests_total{handler="other",code="404"}`:   1,
		`eventagg_publish_duration_seconds_bucket{le="+Inf"}`:        7,
		"eventagg_publish_duration_seconds_count":                    7,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	// Buckets are cumulative.
	prev := 0.0
	for _, le := range []string{"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"} {
		v, ok := got[`eventagg_publish_duration_seconds_bucket{le="`+le+`"}`]
		if !ok || v < prev {
			t.Errorf("bucket le=%s = %v (present %v), want >= %v", le, v, ok, prev)
		}
		prev = v
	}
}

func TestAccessLog(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	s := newServer(t, nil, nil, &httpapi.Options{Logger: logger})
	s.do(t, "POST", "/publish", `[{"topic":"a","event_id":"1","payload":{"card":"secret-card-number"}},{"topic":"a","event_id":"2"}]`)
	s.do(t, "GET", "/stats", "")
	var records []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		records = append(records, rec)
	}
	if len(records) != 2 {
		t.Fatalf("got %d access records, want 2:\n%s", len(records), logs.String())
	}
	pub := records[0]
	if pub["method"] != "POST" || pub["path"] != "/publish" || pub["status"] != 200.0 || pub["events"] != 2.0 || pub["duration"] == nil {
		t.Errorf("publish access record = %v", pub)
	}
	if _, ok := records[1]["events"]; ok || records[1]["path"] != "/stats" {
		t.Errorf("stats access record = %v", records[1])
	}
	if strings.Contains(logs.String(), "secret-card-number") {
		t.Errorf("the access log holds a payload: %s", logs.String())
	}
}

func TestMountedUnderPrefix(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	mux := http.NewServeMux()
	mux.Handle("/eventagg/", http.StripPrefix("/eventagg", checkedHandler(t, s.h)))
	req := httptest.NewRequestWithContext(t.Context(), "POST", "/eventagg/publish", strings.NewReader(`{"topic":"a","event_id":"1"}`))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Errorf("POST /eventagg/publish = %d %s", rec.Code, rec.Body)
	}
}

// nextTarget returns the request target the Link header of resp points to,
// resolved against target, or "" without a Link.
func nextTarget(t *testing.T, target string, resp response) string {
	t.Helper()
	link := resp.header.Get("Link")
	if link == "" {
		return ""
	}
	m := regexp.MustCompile(`^<([^>]+)>; rel="next"$`).FindStringSubmatch(link)
	if m == nil {
		t.Fatalf("Link header %q is not <url>; rel=\"next\"", link)
	}
	return resolve(t, target, m[1])
}

// TestStatsPagesTopics checks that GET /stats holds a bounded page of topics
// with the totals of all, and that following its Link reads every topic once.
func TestStatsPagesTopics(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	var batch []eventagg.Event
	for i := range httpapi.DefaultStatsTopics + 5 {
		batch = append(batch, eventagg.Event{Topic: fmt.Sprintf("t%05d", i), EventID: "1"})
	}
	if _, err := s.agg.Publish(t.Context(), batch...); err != nil {
		t.Fatal(err)
	}
	all := s.stats(t)
	get := func(target string) (httpapi.StatsResponse, response) {
		t.Helper()
		resp := s.do(t, "GET", target, "")
		if resp.status != 200 {
			t.Fatalf("GET %s = %d %s", target, resp.status, resp.body)
		}
		var st httpapi.StatsResponse
		resp.decode(t, &st)
		if st.Counts != all.Counts || st.TopicCount != int64(len(all.Topics)) {
			t.Errorf("GET %s totals = %+v over %d topics, want %+v over %d", target, st.Counts, st.TopicCount, all.Counts, len(all.Topics))
		}
		return st, resp
	}
	first, resp := get("/stats")
	if len(first.Topics) != httpapi.DefaultStatsTopics || resp.header.Get("Link") == "" {
		t.Errorf("GET /stats holds %d topics, Link %q; want %d and a link to the rest", len(first.Topics), resp.header.Get("Link"), httpapi.DefaultStatsTopics)
	}
	seen := map[string]eventagg.Counts{}
	target := "/stats?topics_limit=300"
	for pages := 0; target != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging /stats does not end")
		}
		st, resp := get(target)
		if len(st.Topics) > 300 {
			t.Fatalf("GET %s holds %d topics, over topics_limit", target, len(st.Topics))
		}
		for name, c := range st.Topics {
			if _, dup := seen[name]; dup {
				t.Errorf("topic %s on two pages", name)
			}
			seen[name] = c
		}
		target = nextTarget(t, target, resp)
	}
	if diff := cmp.Diff(all.Topics, seen); diff != "" {
		t.Errorf("paged topics differ from Stats (-want +got):\n%s", diff)
	}
	for _, q := range []string{"topics_limit=0", "topics_limit=10001", "topics_limit=x"} {
		if resp := s.do(t, "GET", "/stats?"+q, ""); resp.status != 400 {
			t.Errorf("GET /stats?%s = %d %s, want 400", q, resp.status, resp.body)
		}
	}
}

// TestQueriesAreStrict sends query strings that do not parse, repeat a
// parameter or name an unknown one: each gets a 400 JSON error naming the
// problem, instead of being read as no filter; a publish stores nothing.
func TestQueriesAreStrict(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	publishN(t, s, "a", 3)
	publishN(t, s, "b", 2)
	tests := []struct{ method, target, msg string }{
		{"GET", "/events?topic=a%zz", "malformed query string"},
		{"GET", "/events?topic=a;b", "malformed query string"},
		{"GET", "/events?topic=a&topic=b", `"topic" is given 2 times`},
		{"GET", "/events?limit=1&limit=2", `"limit" is given 2 times`},
		{"GET", "/events?topics=a", `unknown query parameter "topics"`},
		{"GET", "/stats?topics_limit=5&topics_limit=6", `"topics_limit" is given 2 times`},
		{"GET", "/stats?topic=a", `unknown query parameter "topic"`},
		{"GET", "/health?verbose=1", "takes no query parameters"},
		{"GET", "/metrics?x=%", "malformed query string"},
		{"POST", "/publish?duplicates=true&duplicates=false", `"duplicates" is given 2 times`},
		{"POST", "/publish?dupes=true", `unknown query parameter "dupes"`},
	}
	for _, tt := range tests {
		resp := s.do(t, tt.method, tt.target, `{"topic":"c","event_id":"1"}`)
		var body httpapi.ErrorResponse
		resp.decode(t, &body)
		if resp.status != 400 || !strings.Contains(body.Error, tt.msg) {
			t.Errorf("%s %s = %d %s; want 400 saying %q", tt.method, tt.target, resp.status, resp.body, tt.msg)
		}
	}
	if st := s.stats(t); st.Received != 5 {
		t.Errorf("after refused publishes Stats() = %+v; want only the 5 first events", st.Counts)
	}
}

// TestMountedUnderPrefixLinks mounts the handler under /eventagg/ as README
// shows: the Link headers and the 404 hints work in the host's mux.
func TestMountedUnderPrefixLinks(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	publishN(t, s, "a", 3)
	mux := http.NewServeMux()
	mux.Handle("/eventagg/", http.StripPrefix("/eventagg", checkedHandler(t, s.h)))
	get := func(target string) response {
		t.Helper()
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), "GET", target, nil))
		return response{rec.Code, rec.Header(), rec.Body.Bytes()}
	}
	var got []string
	target := "/eventagg/events?limit=1"
	for pages := 0; target != ""; pages++ {
		if pages > 4 {
			t.Fatal("paging does not end")
		}
		resp := get(target)
		if resp.status != 200 {
			t.Fatalf("GET %s = %d %s: the Link does not work under the prefix", target, resp.status, resp.body)
		}
		var page []eventagg.Event
		resp.decode(t, &page)
		got = append(got, ids(page)...)
		target = nextTarget(t, target, resp)
		if target != "" && !strings.HasPrefix(target, "/eventagg/events?") {
			t.Errorf("next page %q is outside the mount", target)
		}
	}
	if diff := cmp.Diff([]string{"a/0", "a/1", "a/2"}, got); diff != "" {
		t.Errorf("paged listing under the prefix (-want +got):\n%s", diff)
	}
	resp := get("/eventagg/nope")
	var body httpapi.ErrorResponse
	resp.decode(t, &body)
	if resp.status != 404 || !strings.Contains(body.Error, "/eventagg/nope") || !strings.Contains(body.Error, "GET /eventagg/events") {
		t.Errorf("GET /eventagg/nope = %d %s; want a 404 naming the full path and hinting at /eventagg/events", resp.status, resp.body)
	}
}

// TestEventsHeaders checks that every /events answer, empty or not, paged
// or streamed, is JSON that browsers must not sniff.
func TestEventsHeaders(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	for _, target := range []string{"/events", "/events?topic=a", "/events?limit=2"} {
		if resp := s.do(t, "GET", target, ""); resp.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s (empty) lacks X-Content-Type-Options: nosniff: %v", target, resp.header)
		}
	}
	publishN(t, s, "a", 3)
	for _, target := range []string{"/events", "/events?topic=a", "/events?limit=2"} {
		resp := s.do(t, "GET", target, "")
		if resp.header.Get("X-Content-Type-Options") != "nosniff" || resp.header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s headers %v; want JSON with nosniff", target, resp.header)
		}
	}
}

// TestEventsPageBoundedByBytes lists large events with a limit: a page stops
// after the event that brings its payloads to eventagg.PageBytes, and its
// Link leads to the rest.
func TestEventsPageBoundedByBytes(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	payload := json.RawMessage(`"` + strings.Repeat("x", eventagg.PageBytes/4) + `"`)
	var batch []eventagg.Event
	for i := range 10 {
		batch = append(batch, eventagg.Event{Topic: "big", EventID: strconv.Itoa(i), Payload: payload})
	}
	if _, err := s.agg.Publish(t.Context(), batch...); err != nil {
		t.Fatal(err)
	}
	var pages [][]string
	target := "/events?limit=100"
	for target != "" && len(pages) < 10 {
		resp := s.do(t, "GET", target, "")
		var page []eventagg.Event
		resp.decode(t, &page)
		if len(page) > 5 {
			t.Errorf("GET %s holds %d events of %d bytes: more than eventagg.PageBytes and one event", target, len(page), len(payload))
		}
		pages = append(pages, ids(page))
		target = nextTarget(t, target, resp)
	}
	var got []string
	for _, p := range pages {
		got = append(got, p...)
	}
	if len(pages) < 2 || len(got) != 10 {
		t.Errorf("pages %v; want the 10 events over several pages", pages)
	}
}

// blockingStore holds every listing until release is closed.
type blockingStore struct {
	eventagg.Store
	listing chan struct{} // receives when a listing starts
	release chan struct{}
}

func (b *blockingStore) Events(ctx context.Context, q eventagg.Query) iter.Seq2[eventagg.Event, error] {
	return func(yield func(eventagg.Event, error) bool) {
		select {
		case b.listing <- struct{}{}:
		case <-b.release: // released: nobody waits for listings to start
		}
		<-b.release
		for e, err := range b.Store.Events(ctx, q) {
			if !yield(e, err) {
				return
			}
		}
	}
}

// TestListingsAreCapped holds MaxListings listings open: one more gets 503
// with Retry-After, and once they end a listing is served again.
func TestListingsAreCapped(t *testing.T) {
	store := &blockingStore{Store: eventagg.NewMemoryStore(), listing: make(chan struct{}), release: make(chan struct{})}
	s := newServer(t, store, nil, &httpapi.Options{MaxListings: 2})
	done := make(chan response, 2)
	for range 2 {
		go func() { done <- s.do(t, "GET", "/events", "") }()
		<-store.listing
	}
	resp := s.do(t, "GET", "/events?limit=5", "")
	var body httpapi.ErrorResponse
	resp.decode(t, &body)
	if resp.status != 503 || resp.header.Get("Retry-After") == "" || !strings.Contains(body.Error, "too many listings") || body.Code != httpapi.CodeTooManyListings {
		t.Errorf("a listing over the cap = %d %v %s; want 503 with Retry-After", resp.status, resp.header, resp.body)
	}
	close(store.release)
	for range 2 {
		if r := <-done; r.status != 200 {
			t.Errorf("a held listing = %d %s", r.status, r.body)
		}
	}
	if resp := s.do(t, "GET", "/events", ""); resp.status != 200 {
		t.Errorf("a listing after the others ended = %d %s", resp.status, resp.body)
	}
}

// recordWatcher is a slog.Handler that sends each record's message on a channel.
type recordWatcher struct{ records chan slog.Record }

func (w recordWatcher) Enabled(context.Context, slog.Level) bool      { return true }
func (w recordWatcher) Handle(_ context.Context, r slog.Record) error { w.records <- r; return nil }
func (w recordWatcher) WithAttrs([]slog.Attr) slog.Handler            { return w }
func (w recordWatcher) WithGroup(string) slog.Handler                 { return w }

// TestStalledListingIsCut serves a listing of many megabytes to a client
// that reads nothing: the handler gives up after WriteTimeout and frees the
// listing's slot, while a client that reads, slowly, gets everything.
func TestStalledListingIsCut(t *testing.T) {
	records := make(chan slog.Record, 100)
	s := newServer(t, nil, nil, &httpapi.Options{
		WriteTimeout: 300 * time.Millisecond, MaxListings: 1, Logger: slog.New(recordWatcher{records}),
	})
	payload := json.RawMessage(`"` + strings.Repeat("x", 64<<10) + `"`)
	var batch []eventagg.Event
	for i := range 300 { // ~20 MB: far more than the socket buffers hold
		batch = append(batch, eventagg.Event{Topic: "big", EventID: strconv.Itoa(i), Payload: payload})
	}
	if _, err := s.agg.Publish(t.Context(), batch...); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(checkedHandler(t, s.h))
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /events HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Reads nothing: the handler's access record comes once it gave up.
	for ended := false; !ended; {
		select {
		case r := <-records:
			ended = r.Message == "request"
		case <-time.After(30 * time.Second):
			t.Fatal("the listing to a client that reads nothing was not cut within 30s")
		}
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("the stalled listing ended after %v, before the write timeout", d)
	}
	// Its slot is free again; a reader that keeps reading is not cut.
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	dec := json.NewDecoder(resp.Body)
	var events []eventagg.Event
	if resp.StatusCode != 200 {
		t.Fatalf("GET /events after the stalled one = %d", resp.StatusCode)
	}
	if err := dec.Decode(&events); err != nil {
		t.Fatalf("reading the whole listing: %v", err)
	}
	n = len(events)
	if n != 300 {
		t.Errorf("a reading client got %d events, want 300", n)
	}
}

func TestMetricsCountClaims(t *testing.T) {
	t.Parallel()
	s := newServer(t, nil, nil, nil)
	for _, id := range []string{"d-1", "d-2"} {
		if _, err := s.agg.Claim(t.Context(), eventagg.Key{Topic: "hooks", EventID: id}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	got := parseProm(t, string(s.do(t, "GET", "/metrics", "").body))
	if got["eventagg_claims_active"] != 2 {
		t.Errorf("eventagg_claims_active = %v with two claims held, want 2", got["eventagg_claims_active"])
	}
	if v, ok := got["eventagg_claims_expired_total"]; !ok || v != 0 {
		t.Errorf("eventagg_claims_expired_total = %v (present %v), want 0", v, ok)
	}
}
