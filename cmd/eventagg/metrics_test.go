package main

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// getMetrics returns the status, content type and body of GET /metrics,
// with authorization if not empty.
func getMetrics(t *testing.T, url, method, authorization string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// TestMetricsAddRuntimeAndProcess: the server's /metrics is the handler's
// exposition, every eventagg_ series first and unchanged, followed by the
// Go runtime's and the process's metrics; the whole parses as one
// exposition, with no family given twice.
func TestMetricsAddRuntimeAndProcess(t *testing.T) {
	t.Parallel()
	url, _, _ := MustRunMain(t, nil, "-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "events.db"))
	if _, err := newClient(t, url).Publish(t.Context(), eventagg.Event{Topic: "a", EventID: "1"}, eventagg.Event{Topic: "a", EventID: "1"}); err != nil {
		t.Fatal(err)
	}
	status, contentType, body := getMetrics(t, url, "GET", "")
	if status != 200 || !strings.HasPrefix(contentType, "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics = %d %q", status, contentType)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("GET /metrics does not parse as one exposition: %v\n%s", err, body)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "go_memstats_heap_alloc_bytes",
		"eventagg_events_unique_total", "eventagg_http_requests_total", "eventagg_sqlite_wal_bytes"} {
		if families[name] == nil {
			t.Errorf("GET /metrics lacks %s:\n%s", name, body)
		}
	}
	if v := families["process_resident_memory_bytes"].GetMetric()[0].GetGauge().GetValue(); v < 1<<20 {
		t.Errorf("process_resident_memory_bytes = %v, want this process's RSS", v)
	}
	if !strings.Contains(body, "\neventagg_events_unique_total 1\n") || !strings.Contains(body, "\neventagg_events_duplicate_total 1\n") {
		t.Errorf("GET /metrics lacks the event counters as the handler writes them:\n%s", body)
	}
	// The handler's exposition comes first, whole: no eventagg_ line after
	// the first line of the runtime's.
	first := strings.Index(body, "# HELP go_")
	if p := strings.Index(body, "# HELP process_"); p >= 0 && p < first {
		first = p
	}
	if first < 0 || strings.Contains(body[first:], "eventagg_") || !strings.HasPrefix(body, "# HELP eventagg_") {
		t.Errorf("GET /metrics does not hold the handler's exposition, then the runtime's:\n%s", body)
	}
}

// TestMetricsKeepTokenReads: under -token-reads, GET /metrics without the
// token is the handler's 401 JSON error, with nothing after it; with the
// token it has the runtime's metrics. HEAD and other methods answer as the
// handler does.
func TestMetricsKeepTokenReads(t *testing.T) {
	t.Parallel()
	const token = "s3cret-token"
	url, _, _ := MustRunMain(t, map[string]string{"EVENTAGG_TOKEN": token}, "-addr", "127.0.0.1:0",
		"-db", filepath.Join(t.TempDir(), "events.db"), "-token-reads")
	status, _, body := getMetrics(t, url, "GET", "")
	var e struct{ Error, Code string }
	if status != 401 || json.Unmarshal([]byte(body), &e) != nil || e.Code != "unauthorized" {
		t.Errorf("GET /metrics without the token = %d %s; want 401 and a JSON error alone", status, body)
	}
	if status, _, body := getMetrics(t, url, "GET", "Bearer "+token); status != 200 || !strings.Contains(body, "\ngo_goroutines ") ||
		!strings.Contains(body, "eventagg_queue_depth 0\n") {
		t.Errorf("GET /metrics with the token = %d; want 200 with go_goroutines and the eventagg_ series:\n%s", status, body)
	}
	if status, _, body := getMetrics(t, url, "HEAD", "Bearer "+token); status != 200 || body != "" {
		t.Errorf("HEAD /metrics = %d %q, want 200 without a body", status, body)
	}
	if status, _, body := getMetrics(t, url, "POST", "Bearer "+token); status != 405 || strings.Contains(body, "go_") {
		t.Errorf("POST /metrics = %d %s; want 405 alone", status, body)
	}
}
