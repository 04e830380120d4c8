package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// peakRSS returns the peak resident set size of process pid (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/pid/status")
	return 0
}

// resetPeakRSS makes the kernel count the peak RSS of pid afresh from now.
func resetPeakRSS(t *testing.T, pid int) {
	t.Helper()
	if err := os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0); err != nil {
		t.Fatalf("resetting the peak RSS: %v", err)
	}
}

// post sends a publish body and fails the test unless it is answered 200.
func post(t *testing.T, url, body string) {
	t.Helper()
	resp, err := http.Post(url+"/publish", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("publish = %d %s", resp.StatusCode, data)
	}
}

// TestStalledReadersKeepMemoryBounded stores 520 events of 200 KB, then
// opens 15 listings (half of them ?limit=10000) that read nothing: the
// server's peak RSS stays under 400 MiB, publishing goes on, and once the
// write timeout passes every stalled listing is cut.
func TestStalledReadersKeepMemoryBounded(t *testing.T) {
	t.Parallel()
	c := startProgram(t, serverBinary(t), filepath.Join(t.TempDir(), "events.db"), "-write-timeout", "3s")
	payload := `"` + strings.Repeat("x", 200<<10) + `"`
	for b := range 52 {
		var body bytes.Buffer
		body.WriteByte('[')
		for i := range 10 {
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"topic":"big","event_id":"%d-%d","payload":%s}`, b, i, payload)
		}
		body.WriteByte(']')
		post(t, c.url, body.String())
	}
	resetPeakRSS(t, c.cmd.Process.Pid)

	const stalled = 15
	addr := strings.TrimPrefix(c.url, "http://")
	for i := range stalled {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		target := "/events"
		if i%2 == 1 {
			target = "/events?limit=10000"
		}
		if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", target); err != nil {
			t.Fatal(err)
		}
	}
	// While they stall, publishing and health checks are answered.
	post(t, c.url, `{"topic":"small","event_id":"during"}`)
	if status, _, body := httpDo(t, "GET", c.url+"/health", ""); status != 200 {
		t.Errorf("GET /health while listings stall = %d %s", status, body)
	}
	// Each stalled listing ends, cut by the write timeout, with its access record.
	c.logs.await(t, stalled, time.Minute, `"msg":"request"`, `"path":"/events"`)
	peak := peakRSS(t, c.cmd.Process.Pid)
	t.Logf("peak RSS with %d stalled listings of 104 MB: %.1f MiB", stalled, float64(peak)/(1<<20))
	if peak > 400<<20 {
		t.Errorf("peak RSS %.1f MiB with %d stalled listings, want under 400 MiB", float64(peak)/(1<<20), stalled)
	}
}

// TestStatsWithManyTopicsKeepsMemoryBounded creates 200,000 topics with
// long names, then sends twenty /stats requests at once: each answer holds
// the totals and a bounded page of topics, and the server's peak RSS stays
// under 150 MiB.
func TestStatsWithManyTopicsKeepsMemoryBounded(t *testing.T) {
	t.Parallel()
	c := startProgram(t, serverBinary(t), filepath.Join(t.TempDir(), "events.db"))
	const topics, perRequest = 200_000, 10_000
	prefix := strings.Repeat("topic-with-a-long-name-", 3)
	for r := range topics / perRequest {
		var body bytes.Buffer
		body.WriteByte('[')
		for i := range perRequest {
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"topic":"%s%07d","event_id":"1"}`, prefix, r*perRequest+i)
		}
		body.WriteByte(']')
		post(t, c.url, body.String())
	}
	resetPeakRSS(t, c.cmd.Process.Pid)

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			resp, err := http.Get(c.url + "/stats")
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			data, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 {
				t.Errorf("GET /stats = %d, %v", resp.StatusCode, err)
				return
			}
			if len(data) > 1<<20 || !bytes.Contains(data, []byte(`"topic_count":200000`)) || resp.Header.Get("Link") == "" {
				t.Errorf("GET /stats answered %d bytes, Link %q; want the totals of 200000 topics, a bounded page and a link to the next",
					len(data), resp.Header.Get("Link"))
			}
		})
	}
	wg.Wait()
	peak := peakRSS(t, c.cmd.Process.Pid)
	t.Logf("peak RSS over 20 concurrent /stats of %d topics: %.1f MiB", topics, float64(peak)/(1<<20))
	if peak > 150<<20 {
		t.Errorf("peak RSS %.1f MiB over 20 concurrent /stats, want under 150 MiB", float64(peak)/(1<<20))
	}
}
