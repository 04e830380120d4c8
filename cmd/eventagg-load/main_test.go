package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

func newServer(t *testing.T, wrap func(http.Handler) http.Handler) *httptest.Server {
	t.Helper()
	agg, err := eventagg.New(eventagg.NewMemoryStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = httpapi.NewHandler(agg, nil)
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); agg.Close() })
	return srv
}

func TestRunReportsAndChecks(t *testing.T) {
	for _, ids := range []string{"uuid", "seq"} {
		srv := newServer(t, nil)
		var out bytes.Buffer
		err := run(t.Context(), []string{"-url", srv.URL, "-clients", "3", "-batch", "7", "-events", "100", "-ids", ids, "-progress", "0"}, &out, io.Discard)
		if err != nil {
			t.Fatalf("run(-ids %s) = %v\n%s", ids, err, out.String())
		}
		for _, want := range []string{"sent       105 events in 15 requests", "throughput", "latency    p50", "check      ok"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("-ids %s: output lacks %q:\n%s", ids, want, out.String())
			}
		}
	}
}

func TestRunDetectsStatsMismatch(t *testing.T) {
	// A server that stores each publish twice over (a second, hidden copy
	// under another topic) must fail the check.
	var inner http.Handler
	srv := newServer(t, func(h http.Handler) http.Handler {
		inner = h
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/publish" {
				body, _ := io.ReadAll(r.Body)
				shadow := strings.ReplaceAll(string(body), `"topic":"load"`, `"topic":"shadow"`)
				inner.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(r.Context(), "POST", "/publish", strings.NewReader(shadow)))
				r.Body = io.NopCloser(bytes.NewReader(body))
			}
			inner.ServeHTTP(w, r)
		})
	})
	var out bytes.Buffer
	err := run(t.Context(), []string{"-url", srv.URL, "-clients", "2", "-batch", "5", "-events", "20", "-progress", "0"}, &out, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "stats check failed") {
		t.Errorf("run against a server that stores extra events = %v, want a failed stats check\n%s", err, out.String())
	}
}

func TestParseConfigRejects(t *testing.T) {
	for _, args := range [][]string{
		{"-clients", "0"}, {"-batch", "-1"}, {"-dups", "1"}, {"-dups", "-0.1"}, {"-ids", "ulid"}, {"extra"},
	} {
		if _, err := parseConfig(args, io.Discard); err == nil {
			t.Errorf("parseConfig(%q) = nil error", args)
		}
	}
}

func TestRunWithFollowers(t *testing.T) {
	srv := newServer(t, nil)
	var out bytes.Buffer
	err := run(t.Context(), []string{"-url", srv.URL, "-clients", "2", "-batch", "5", "-events", "60", "-followers", "3", "-progress", "0"}, &out, io.Discard)
	if err != nil {
		t.Fatalf("run(-followers 3) = %v\n%s", err, out.String())
	}
	for _, want := range []string{"followers  3 following topic load-", "delivery   p50", "each of 3 followers received all", "check      ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunAtARate(t *testing.T) {
	srv := newServer(t, nil)
	var out bytes.Buffer
	err := run(t.Context(), []string{"-url", srv.URL, "-clients", "2", "-batch", "10", "-rate", "200", "-duration", "1s", "-progress", "0"}, &out, io.Discard)
	if err != nil {
		t.Fatalf("run(-rate 200) = %v\n%s", err, out.String())
	}
	var sent int
	if _, err := fmt.Sscanf(out.String()[strings.Index(out.String(), "sent "):], "sent %d events", &sent); err != nil {
		t.Fatalf("no sent line: %v\n%s", err, out.String())
	}
	// One second at 200 events/s: each client sends its batch every 100 ms,
	// the first ones at once, so at most 200 events and a batch each.
	if sent == 0 || sent > 220 {
		t.Errorf("sent %d events in 1s at -rate 200, want at most 220\n%s", sent, out.String())
	}
	if !strings.Contains(out.String(), "offered    200 events/s") {
		t.Errorf("output lacks the offered line:\n%s", out.String())
	}
}
