package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
)

// openFollow sends GET target to the server at url and returns a reader
// of the answer's body, having checked that it is a 200 event stream.
// Reading nothing from it stalls the follow once the connection's buffers
// are full.
func openFollow(t *testing.T, url, target string) *bufio.Reader {
	t.Helper()
	resp, err := http.Get(url + target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("follow answered %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return bufio.NewReaderSize(resp.Body, 64<<10)
}

// readEvents reads the events of an event stream from r until n have
// come, and returns them.
func readEvents(t *testing.T, r *bufio.Reader, n int) []eventagg.Event {
	t.Helper()
	var out []eventagg.Event
	id := ""
	for len(out) < n {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended after %d of %d events: %v", len(out), n, err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "data: "):
			var e eventagg.Event
			if err := json.Unmarshal([]byte(line[6:]), &e); err != nil {
				t.Fatalf("data line of %d bytes is not an event: %v", len(line), err)
			}
			if strconv.FormatInt(e.Seq, 10) != id {
				t.Fatalf("event with seq %d under id %q", e.Seq, id)
			}
			out = append(out, e)
		}
	}
	return out
}

// TestStalledFollowersKeepMemoryBounded opens ten follows that read nothing
// while 26 MB of events are published: the server's peak RSS stays under
// 150 MiB (each follow holds a page, not a backlog of 26 MB), and once they
// read again, each gets every event exactly once, in order.
func TestStalledFollowersKeepMemoryBounded(t *testing.T) {
	t.Parallel()
	// A write timeout longer than the test: the follows stall, and are not cut.
	c := startProgram(t, serverBinary(t), filepath.Join(t.TempDir(), "events.db"), "-write-timeout", "10m")
	post(t, c.url, `{"topic":"small","event_id":"first"}`)
	const followers = 10
	readers := make([]*bufio.Reader, followers)
	for i := range readers {
		readers[i] = openFollow(t, c.url, "/events?follow=true")
		if got := readEvents(t, readers[i], 1); got[0].EventID != "first" {
			t.Fatalf("follower %d: first event %+v", i, got[0])
		}
	}
	resetPeakRSS(t, c.cmd.Process.Pid)
	payload := `"` + strings.Repeat("x", 100<<10) + `"`
	const batches, per = 26, 10
	for b := range batches {
		var body bytes.Buffer
		body.WriteByte('[')
		for i := range per {
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"topic":"big","event_id":"%d-%d","payload":%s}`, b, i, payload)
		}
		body.WriteByte(']')
		post(t, c.url, body.String())
	}
	peak := peakRSS(t, c.cmd.Process.Pid)
	t.Logf("peak RSS with %d stalled followers while 26 MB were published: %.1f MiB", followers, float64(peak)/(1<<20))
	if peak > 150<<20 {
		t.Errorf("peak RSS %.1f MiB with %d stalled followers, want under 150 MiB", float64(peak)/(1<<20), followers)
	}
	for i, r := range readers {
		got := readEvents(t, r, batches*per)
		for j, e := range got {
			if want := fmt.Sprintf("%d-%d", j/per, j%per); e.EventID != want || e.Seq != int64(j+2) || len(e.Payload) != len(payload) {
				t.Fatalf("follower %d, event %d: %s (seq %d, %d bytes), want %s (seq %d)", i, j, e.EventID, e.Seq, len(e.Payload), want, j+2)
			}
		}
	}
}

// TestSIGTERMEndsFollows: a server with follows under way shuts down at
// once on SIGTERM, ending them, instead of waiting out its shutdown
// timeout for streams that never finish.
func TestSIGTERMEndsFollows(t *testing.T) {
	t.Parallel()
	c := startChild(t, filepath.Join(t.TempDir(), "events.db"), "-shutdown-timeout", "60s")
	post(t, c.url, `{"topic":"a","event_id":"1"}`)
	var readers []*bufio.Reader
	for range 3 {
		r := openFollow(t, c.url, "/events?follow=true")
		readEvents(t, r, 1)
		readers = append(readers, r)
	}
	start := time.Now()
	c.terminate(t)
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("shutdown with follows under way took %v", d)
	}
	if n := c.logs.count("requests still under way at the shutdown timeout were cut"); n != 0 {
		t.Errorf("the follows were cut at the shutdown timeout rather than ended; log:\n%s", c.logs.all.String())
	}
	for i, r := range readers {
		// The stream's clean end (its last chunk), not a cut.
		if rest, err := io.ReadAll(r); err != nil || strings.Contains(string(rest), "data:") {
			t.Errorf("follower %d: after shutdown read %q, %v; want the stream's end", i, rest, err)
		}
	}
}
