package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/google/go-cmp/cmp"
)

// browserAccept is the Accept header Chromium and Firefox send for a page.
const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

// page asks s for GET / as a browser does, with extra headers (name,
// value), checked against openapi.json as server.do's requests are.
func (s *server) page(t *testing.T, header ...string) response {
	t.Helper()
	return s.doWith(t, "GET", "/", "", append([]string{"Accept", browserAccept}, header...)...)
}

var counterRE = regexp.MustCompile(`<dd id="([a-z_]+)" data-value="(-?\d+)">([0-9,]+)</dd>`)

// counters returns the counters the page shows, by id, failing the test if
// a counter's text and value differ.
func counters(t *testing.T, body []byte) map[string]int64 {
	t.Helper()
	out := make(map[string]int64)
	for _, m := range counterRE.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseInt(m[2], 10, 64)
		if text := strings.ReplaceAll(m[3], ",", ""); text != m[2] {
			t.Errorf("counter %s shows %q, its value is %s", m[1], m[3], m[2])
		}
		out[m[1]] = v
	}
	return out
}

// TestStatusPageShowsStats renders the page and reads back every counter:
// each equals what GET /stats answers, without any script having run.
func TestStatusPageShowsStats(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	publishN(t, s, "orders", 1234)
	s.do(t, "POST", "/publish", `[{"topic":"orders","event_id":"1","payload":{"other":true}},{"topic":"orders","event_id":"2","payload":{"i":2}},{"topic":"clicks","event_id":"x"}]`)
	if _, err := s.agg.Claim(t.Context(), eventagg.Key{Topic: "orders", EventID: "7"}, time.Minute); err != nil {
		t.Fatal(err)
	}

	resp := s.page(t)
	if resp.status != 200 || resp.header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET / = %d %q; want 200 text/html", resp.status, resp.header.Get("Content-Type"))
	}
	for _, h := range []string{"Content-Security-Policy", "X-Content-Type-Options", "Cache-Control"} {
		if resp.header.Get(h) == "" {
			t.Errorf("GET / has no %s header", h)
		}
	}
	var st httpapi.StatsResponse
	s.do(t, "GET", "/stats", "").decode(t, &st)
	if st.Claims == nil {
		t.Fatal("GET /stats has no claims; the test needs a store that holds them")
	}
	want := map[string]int64{
		"received": st.Received, "unique_processed": st.UniqueProcessed, "duplicate_dropped": st.DuplicateDropped,
		"conflicts": st.Conflicts, "stored": st.Stored, "expired": st.Expired, "topic_count": st.TopicCount,
		"claims_active": st.Claims.Active, "claims_expired": st.Claims.Expired, "queue_depth": 0,
	}
	got := counters(t, resp.body)
	if v := regexp.MustCompile(`id="queue_depth" data-value="(\d+)"`).FindSubmatch(resp.body); v != nil {
		got["queue_depth"], _ = strconv.ParseInt(string(v[1]), 10, 64)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the page's counters differ from GET /stats (-stats +page):\n%s", diff)
	}
	if st.Received != 1237 || st.Conflicts != 1 {
		t.Errorf("GET /stats = %+v; want 1237 received, 1 conflict", st.Counts)
	}
	if !strings.Contains(string(resp.body), `<dd id="received" data-value="1237">1,237</dd>`) {
		t.Errorf("the received counter is not shown grouped as 1,237:\n%s", resp.body)
	}
	if !strings.Contains(string(resp.body), `data-status="healthy"`) {
		t.Errorf("the page does not say the store is healthy:\n%s", resp.body)
	}
}

// TestStatusPageEscapesClientData publishes topics and payloads that are
// markup: the page shows them as text and runs no script but its own.
func TestStatusPageEscapesClientData(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	hostile := []string{`<script>alert("topic")</script>`, `"><img src=x onerror=alert(1)>`, `</style><b>x</b>`}
	for i, topic := range hostile {
		body, _ := json.Marshal(map[string]any{"topic": topic, "event_id": "<i>" + strconv.Itoa(i), "payload": map[string]string{"html": "</script><script>alert(2)</script>"}})
		if resp := s.do(t, "POST", "/publish", string(body)); resp.status != 200 {
			t.Fatalf("publish %q = %d %s", topic, resp.status, resp.body)
		}
	}
	resp := s.page(t)
	page := string(resp.body)
	for _, topic := range hostile {
		if strings.Contains(page, topic) {
			t.Errorf("the page holds the topic %q unescaped", topic)
		}
	}
	for _, escaped := range []string{`&lt;script&gt;alert(&#34;topic&#34;)&lt;/script&gt;`, `&#34;&gt;&lt;img src=x onerror=alert(1)&gt;`, `&lt;/style&gt;&lt;b&gt;x&lt;/b&gt;`} {
		if !strings.Contains(page, escaped) {
			t.Errorf("the page does not show %q as text", escaped)
		}
	}
	if n := strings.Count(page, "<script"); n != 1 {
		t.Errorf("the page has %d script elements, want its own only", n)
	}
	if strings.Contains(page, "onerror=alert(1)>") || strings.Contains(page, "alert(2)") {
		t.Errorf("client data reached the page as markup:\n%s", page)
	}
	// The live tail sets what it shows of events with textContent only.
	js := page[strings.Index(page, "<script>"):]
	if strings.Contains(js, "innerHTML") || strings.Contains(js, "insertAdjacentHTML") || strings.Contains(js, "document.write") {
		t.Errorf("the page's script writes HTML")
	}
}

// statsLimits is a Backend that counts the calls of QueryStats and records
// the largest topics_limit asked for.
type statsLimits struct {
	httpapi.Backend
	mu    sync.Mutex
	max   int
	calls int
}

func (b *statsLimits) QueryStats(ctx context.Context, q eventagg.StatsQuery) (eventagg.Stats, error) {
	b.mu.Lock()
	b.max = max(b.max, q.TopicsLimit)
	b.calls++
	b.mu.Unlock()
	return b.Backend.QueryStats(ctx, q)
}

func (b *statsLimits) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

var topicRowRE = regexp.MustCompile(`<tr><td class="name">([^<]*)</td><td>([0-9,]+)</td>`)

// topicRows returns the topic table's names and received counts, in order.
func topicRows(body []byte) []string {
	var rows []string
	for _, m := range topicRowRE.FindAllSubmatch(body, -1) {
		rows = append(rows, string(m[1])+"="+string(m[2]))
	}
	return rows
}

// TestStatusPageTopicTable shows the largest topics, a bounded number of
// them, read with one bounded page of topics however many there are.
func TestStatusPageTopicTable(t *testing.T) {
	t.Run("Largest", func(t *testing.T) {
		s := newServer(t, nil, nil, nil)
		var want []string
		for i := range 30 { // topic i gets 30-i events, but t05 and t06 get the same
			n := 30 - i
			if i == 6 {
				n = 25
			}
			publishN(t, s, fmt.Sprintf("t%02d", i), n)
			if i < 20 {
				want = append(want, fmt.Sprintf("t%02d=%d", i, n))
			}
		}
		resp := s.page(t)
		if diff := cmp.Diff(want, topicRows(resp.body)); diff != "" {
			t.Errorf("topic table (-want +got):\n%s", diff)
		}
		if m := regexp.MustCompile(`id="topics-note"[^>]*>([^<]*)`).FindSubmatch(resp.body); m == nil || !strings.Contains(string(m[1]), "20 largest of 30 topics") {
			t.Errorf("the table does not say it shows the 20 largest of 30 topics: %q", m)
		}
	})
	t.Run("ManyTopics", func(t *testing.T) {
		s := newServer(t, nil, nil, nil)
		limits := &statsLimits{Backend: s.agg}
		s.h = httpapi.NewHandler(limits, nil)
		for from := 0; from < 3000; from += 500 {
			var batch []eventagg.Event
			for i := from; i < from+500; i++ {
				batch = append(batch, eventagg.Event{Topic: fmt.Sprintf("topic-%05d", i), EventID: "1"})
			}
			if _, err := s.agg.Publish(t.Context(), batch...); err != nil {
				t.Fatal(err)
			}
		}
		publishN(t, s, "topic-00500", 7) // the largest, within the first page of names
		resp := s.page(t)
		rows := topicRows(resp.body)
		if len(rows) != 20 || rows[0] != "topic-00500=8" || rows[1] != "topic-00000=1" {
			t.Errorf("topic table of 3000 topics: %d rows %q; want 20, topic-00500 first, then by name", len(rows), rows)
		}
		if !strings.Contains(string(resp.body), "of the first 1,000 topics by name; 3,000 topics in all") {
			t.Errorf("the table does not say which topics it looked at:\n%s", resp.body)
		}
		limits.mu.Lock()
		defer limits.mu.Unlock()
		if limits.max > httpapi.DefaultStatsTopics {
			t.Errorf("the page read %d topics at once, more than a /stats page (%d)", limits.max, httpapi.DefaultStatsTopics)
		}
	})
}

// TestStatusPageOnlyForBrowsers serves the page on GET and HEAD / to
// requests that accept HTML; the rest get what they got before it existed.
func TestStatusPageOnlyForBrowsers(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	tests := []struct {
		method, target, accept string
		status                 int
		html                   bool
	}{
		{"GET", "/", browserAccept, 200, true},
		{"GET", "/", "text/html", 200, true},
		{"HEAD", "/", browserAccept, 200, true},
		{"GET", "/", "", 404, false},
		{"GET", "/", "*/*", 404, false},
		{"GET", "/", "application/json", 404, false},
		{"GET", "/", "application/json, text/html;q=0.5", 404, false},
		{"GET", "/", "text/html;q=0", 404, false},
		{"POST", "/", browserAccept, 404, false},
		{"GET", "/nope", browserAccept, 404, false},
		{"GET", "/index.html", browserAccept, 404, false},
		{"GET", "/?x=1", browserAccept, 400, false},
	}
	for _, tt := range tests {
		var header []string
		if tt.accept != "" {
			header = []string{"Accept", tt.accept}
		}
		resp := s.doWith(t, tt.method, tt.target, "", header...) // checked against openapi.json
		if resp.status != tt.status {
			t.Errorf("%s %s (Accept %q) = %d %s; want %d", tt.method, tt.target, tt.accept, resp.status, resp.body, tt.status)
			continue
		}
		if tt.html {
			if ct := resp.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
				t.Errorf("%s %s (Accept %q): Content-Type %q, want text/html", tt.method, tt.target, tt.accept, ct)
			}
			if tt.method == "HEAD" && len(resp.body) != 0 {
				t.Errorf("HEAD / has a body of %d bytes", len(resp.body))
			}
			continue
		}
		var body httpapi.ErrorResponse
		resp.decode(t, &body)
		if body.Error == "" || body.Code == "" {
			t.Errorf("%s %s (Accept %q): %s, want a JSON error", tt.method, tt.target, tt.accept, resp.body)
		}
	}
}

// TestStatusPageNeedsTheTokenForReads: with TokenReads the page needs the
// token, as GET /stats does; without, it needs none.
func TestStatusPageNeedsTheTokenForReads(t *testing.T) {
	s := newServer(t, nil, nil, &httpapi.Options{Token: "s3cret", TokenReads: true})
	for _, auth := range []string{"", "Bearer wrong"} {
		resp := s.page(t, "Authorization", auth)
		var body httpapi.ErrorResponse
		resp.decode(t, &body)
		if resp.status != 401 || resp.header.Get("WWW-Authenticate") == "" || body.Code == "" {
			t.Errorf("GET / with Authorization %q = %d %s; want 401 with a challenge", auth, resp.status, resp.body)
		}
		if strings.Contains(string(resp.body), "<html") {
			t.Errorf("GET / without the token shows the page")
		}
	}
	resp := s.page(t, "Authorization", "Bearer s3cret")
	if resp.status != 200 || !strings.Contains(string(resp.body), `data-token-reads="true"`) {
		t.Errorf("GET / with the token = %d; want 200 and the page knowing reads need the token:\n%s", resp.status, resp.body)
	}

	open := newServer(t, nil, nil, &httpapi.Options{Token: "s3cret"})
	if resp := open.page(t); resp.status != 200 || !strings.Contains(string(resp.body), `data-token-reads="false"`) {
		t.Errorf("GET / with a token for publish only = %d, want 200 without a token", resp.status)
	}
}

// TestStatusPageWhenTheStoreFails still renders, saying what fails.
func TestStatusPageWhenTheStoreFails(t *testing.T) {
	t.Run("Reads", func(t *testing.T) {
		s := newServer(t, readFailStore{eventagg.NewMemoryStore()}, nil, nil)
		resp := s.page(t)
		body := string(resp.body)
		if resp.status != 200 || !strings.Contains(body, "Counters unavailable: store unavailable") ||
			!strings.Contains(body, `data-error="the store cannot be read"`) || strings.Contains(body, "secret") {
			t.Errorf("GET / over a failing store = %d:\n%s\nwant the page, saying the counters and tail are unavailable, hiding the store's error", resp.status, body)
		}
	})
	t.Run("NoTail", func(t *testing.T) {
		s := newServer(t, nil, nil, nil)
		s.h = httpapi.NewHandler(notTailer{s.agg}, nil)
		resp := s.page(t)
		if body := string(resp.body); resp.status != 200 || !strings.Contains(body, `data-error="this server cannot follow events: its backend has no Tail"`) {
			t.Errorf("GET / over a backend without Tail = %d:\n%s\nwant the page with the tail off, saying why", resp.status, body)
		}
	})
	t.Run("Closed", func(t *testing.T) {
		s := newServer(t, nil, nil, nil)
		s.store.Close()
		resp := s.page(t)
		if body := string(resp.body); resp.status != 200 || !strings.Contains(body, `data-status="unhealthy"`) || !strings.Contains(body, "shutting down") {
			t.Errorf("GET / over a closed store = %d:\n%s\nwant the page saying it is unhealthy, shutting down", resp.status, body)
		}
	})
}

// TestStatusPageTailStartsAtTheLatestEvents: the live tail follows from
// the last few stored events, not from the first.
func TestStatusPageTailStartsAtTheLatestEvents(t *testing.T) {
	afterRE := regexp.MustCompile(`id="tail" data-after="(\d+)" data-error=""`)
	s := newServer(t, nil, nil, nil)
	for _, n := range []int{0, 1, 5, 300} {
		publishN(t, s, "t"+strconv.Itoa(n), n)
		var events []eventagg.Event
		s.do(t, "GET", "/events", "").decode(t, &events)
		var last int64
		if len(events) > 0 {
			last = events[len(events)-1].Seq
		}
		m := afterRE.FindSubmatch(s.page(t).body)
		if m == nil || string(m[1]) != strconv.FormatInt(max(0, last-10), 10) {
			t.Errorf("with %d events, the last seq %d: the tail starts after %q, want %d", len(events), last, m, max(0, last-10))
		}
	}
}

// TestStatusPageIngestChart samples the received counter as requests come:
// the chart shows the rate of each interval and keeps 15 minutes, and no
// goroutine of the Handler outlives a request (synctest.Test waits for
// every goroutine of its bubble).
func TestStatusPageIngestChart(t *testing.T) {
	barRE := regexp.MustCompile(`<rect [^>]*><title>([0-9.,]+) events/s`)
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t, nil, nil, nil)
		if m := s.page(t); !strings.Contains(string(m.body), `id="chart-empty"`) {
			t.Errorf("a new server's page has a chart: %s", m.body)
		}
		synctest.Wait() // the first sample, taken after that request
		for i := range 120 {
			time.Sleep(10 * time.Second)
			var batch []string
			for j := range 5 { // 5 new events per 10 s: 0.5/s
				batch = append(batch, fmt.Sprintf(`{"topic":"t","event_id":"%d-%d"}`, i, j))
			}
			if resp := s.do(t, "POST", "/publish", "["+strings.Join(batch, ",")+"]"); resp.status != 200 {
				t.Fatalf("publish = %d %s", resp.status, resp.body)
			}
			synctest.Wait()
		}
		body := s.page(t).body
		bars := barRE.FindAllSubmatch(body, -1)
		if len(bars) != 89 {
			t.Errorf("after 20 minutes the chart has %d bars, want 89 (90 samples, 15 minutes)", len(bars))
		}
		for _, b := range bars {
			if string(b[1]) != "0.50" {
				t.Errorf("a bar shows %s events/s, want 0.50", b[1])
				break
			}
		}
		if !strings.Contains(string(body), `id="chart-span">14m50s<`) || !strings.Contains(string(body), `id="rate">0.50<`) {
			t.Errorf("the chart does not say it spans 14m50s at 0.50/s:\n%s", body)
		}

		// An idle hour: the chart shows it as one interval, at no events.
		time.Sleep(time.Hour)
		body = s.page(t).body
		bars = barRE.FindAllSubmatch(body, -1)
		if len(bars) != 1 || string(bars[0][1]) != "0.00" || !strings.Contains(string(body), `id="chart-span">1h0m0s<`) {
			t.Errorf("after an idle hour the chart has %q; want one bar of 0.00/s over 1h0m0s", bars)
		}
	})
}

// TestStatusPageSamplesOnceViewed: a Handler reads the counters for the
// chart only once its page has been asked for, then at most every 10 s,
// after a request.
func TestStatusPageSamplesOnceViewed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t, nil, nil, nil)
		b := &statsLimits{Backend: s.agg}
		s.h = httpapi.NewHandler(b, nil)
		publish := func(id string) {
			t.Helper()
			if resp := s.do(t, "POST", "/publish", `{"topic":"t","event_id":"`+id+`"}`); resp.status != 200 {
				t.Fatalf("publish = %d %s", resp.status, resp.body)
			}
			synctest.Wait()
		}
		for i := range 5 {
			publish("before" + strconv.Itoa(i))
			time.Sleep(10 * time.Second)
		}
		if n := b.count(); n != 0 {
			t.Errorf("before the page was asked for, the Handler read the counters %d times", n)
		}
		s.page(t)
		synctest.Wait()
		if n := b.count(); n != 2 {
			t.Errorf("after the page, %d reads of the counters; want 2 (the page's, the first sample)", n)
		}
		publish("soon")
		time.Sleep(9 * time.Second)
		publish("still soon")
		if n := b.count(); n != 2 {
			t.Errorf("within 10 s of a sample, %d reads of the counters; want no new sample", n)
		}
		time.Sleep(time.Second)
		publish("due")
		if n := b.count(); n != 3 {
			t.Errorf("10 s after a sample, %d reads of the counters; want a new sample", n)
		}
	})
}

// TestStatusPageUnderAPrefix serves the page where the Handler is mounted,
// with links and the tail's stream relative to it.
func TestStatusPageUnderAPrefix(t *testing.T) {
	s := newServer(t, nil, nil, nil)
	mux := http.NewServeMux()
	mux.Handle("/eventagg/", http.StripPrefix("/eventagg", checkedHandler(t, s.h)))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	req, err := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/eventagg/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", browserAccept)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `<a href="stats">`) || !strings.Contains(string(body), `new EventSource("events?follow=true`) {
		t.Errorf("GET /eventagg/ = %d; want the page, its links and stream relative:\n%s", resp.StatusCode, body)
	}
}
