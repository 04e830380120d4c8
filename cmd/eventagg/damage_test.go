package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/eventagg/eventagg/internal/tmpfs"
)

// batchJSON returns a publish body of n events named prefix-0..n-1.
func batchJSON(prefix string, n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"topic":"t","event_id":"%s-%d","payload":{"n":%d}}`, prefix, i, i)
	}
	b.WriteByte(']')
	return b.String()
}

// TestServerNoticesVanishedFiles deletes or truncates the files of a running
// server's database from outside: the next publish gets 503 saying the store
// is damaged, every later one too, /health says 503, and the log says what
// happened. No publish is acknowledged once the files are gone, so none can
// be lost when the server restarts.
func TestServerNoticesVanishedFiles(t *testing.T) {
	tests := []struct {
		name, log string
		fault     func(db string) error
	}{
		{"DatabaseDeleted", "was deleted or renamed", func(db string) error { return os.Remove(db) }},
		{"LogDeleted", "was deleted or renamed", func(db string) error { return os.Remove(db + "-wal") }},
		{"BothTruncated", "", func(db string) error {
			if err := os.Truncate(db, 0); err != nil {
				return err
			}
			return os.Truncate(db+"-wal", 0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := filepath.Join(t.TempDir(), "events.db")
			c := startChild(t, db)
			if status, _, body := httpDo(t, "POST", c.url+"/publish", batchJSON("before", 50)); status != 200 {
				t.Fatalf("publish before the fault = %d %s", status, body)
			}
			if err := tt.fault(db); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				status, header, body := httpDo(t, "POST", c.url+"/publish", batchJSON("after"+strconv.Itoa(i), 5))
				var e httpapi.ErrorResponse
				if status != 503 || header.Get("Retry-After") == "" || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, "damaged") {
					t.Fatalf("publish %d after the fault = %d %s; want 503 saying the store is damaged", i, status, body)
				}
			}
			status, _, body := httpDo(t, "GET", c.url+"/health", "")
			if status != 503 || !strings.Contains(body, "damaged") {
				t.Errorf("GET /health after the fault = %d %s; want 503 saying the store is damaged", status, body)
			}
			_, _, metrics := httpDo(t, "GET", c.url+"/metrics", "")
			if !strings.Contains(metrics, "eventagg_sqlite_damaged 1\n") {
				t.Errorf("/metrics lacks eventagg_sqlite_damaged 1:\n%s", metrics)
			}
			c.logs.await(t, 1, 10*time.Second, `"level":"ERROR"`, "store damaged", tt.log)
		})
	}
}

// TestServerRefusesCorruptDatabase starts the server on a database whose
// header is valid and whose body is garbage: it exits at once with status 1,
// saying the database is corrupt, in a message that names the package once.
func TestServerRefusesCorruptDatabase(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "events.db")
	s, err := eventagg.OpenSQLite(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	var events []eventagg.Event
	for i := range 3000 {
		events = append(events, eventagg.Event{Topic: "t" + strconv.Itoa(i%5), EventID: strconv.Itoa(i), Timestamp: time.Unix(1, 0)})
	}
	if _, err := s.Append(t.Context(), events, eventagg.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	garble(t, db)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-addr", "127.0.0.1:0", "-db", db)
	cmd.Env = append(os.Environ(), "EVENTAGG_TEST_MAIN=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("the server on a corrupt database ended with %v, want exit status 1; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), "corrupt") || strings.Count(string(out), "eventagg:") != 1 {
		t.Errorf("output %q; want one line saying the database is corrupt, with one eventagg: prefix", out)
	}
}

// garble overwrites every page of the database file but the first with
// random bytes.
func garble(t *testing.T, db string) {
	t.Helper()
	fi, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, fi.Size()-4096)
	rand.Read(junk)
	f, err := os.OpenFile(db, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(junk, 4096); err != nil {
		t.Fatal(err)
	}
}

// TestServerStopsOnCorruption garbles the database under a running server:
// once a read finds the corruption, publishes get 503 and /health 503.
func TestServerStopsOnCorruption(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "events.db")
	c := startChild(t, db)
	for i := range 20 {
		if status, _, body := httpDo(t, "POST", c.url+"/publish", strings.ReplaceAll(batchJSON("b"+strconv.Itoa(i), 100), `"t"`, `"t`+strconv.Itoa(i)+`"`)); status != 200 {
			t.Fatalf("publish = %d %s", status, body)
		}
	}
	// Closing checkpoints: the database file then holds every event.
	c.terminate(t)
	c = startChild(t, db)
	garble(t, db)
	if status, _, body := httpDo(t, "GET", c.url+"/stats", ""); status != 503 {
		t.Errorf("GET /stats on a garbled database = %d %s, want 503", status, body)
	}
	if status, _, body := httpDo(t, "POST", c.url+"/publish", batchJSON("late", 1)); status != 503 || !strings.Contains(body, "damaged") {
		t.Errorf("publish after a read found corruption = %d %s; want 503 saying the store is damaged", status, body)
	}
	if status, _, body := httpDo(t, "GET", c.url+"/health", ""); status != 503 {
		t.Errorf("GET /health after a read found corruption = %d %s, want 503", status, body)
	}
	c.logs.await(t, 1, 10*time.Second, "store damaged", "corrupt")
}

// TestServerStartsOnFullDisk starts the server on an existing database on a
// full file system (a small tmpfs): it serves reads, answers publishes 503
// saying there is no space, and stores them once space is freed.
func TestServerStartsOnFullDisk(t *testing.T) {
	t.Parallel()
	dir := tmpfs.Mount(t, 8<<20)
	db := filepath.Join(dir, "events.db")
	c := startChild(t, db)
	if status, _, body := httpDo(t, "POST", c.url+"/publish", batchJSON("before", 100)); status != 200 {
		t.Fatalf("publish = %d %s", status, body)
	}
	c.terminate(t)

	free := tmpfs.Fill(t, dir)
	c = startChild(t, db)
	c.logs.await(t, 1, 10*time.Second, "disk is full")
	var events []eventagg.Event
	status, _, body := httpDo(t, "GET", c.url+"/events", "")
	if status != 200 || json.Unmarshal([]byte(body), &events) != nil || len(events) != 100 {
		t.Fatalf("GET /events on a full disk = %d, %d events; want 200 with the 100 stored", status, len(events))
	}
	if status, _, body := httpDo(t, "GET", c.url+"/health", ""); status != 200 {
		t.Errorf("GET /health on a full disk = %d %s, want 200: reads are served", status, body)
	}
	batch := strings.ReplaceAll(batchJSON("after", 200), `{"n":`, `{"pad":"`+strings.Repeat("p", 2000)+`","n":`)
	status, header, body := httpDo(t, "POST", c.url+"/publish", batch)
	if status != 503 || header.Get("Retry-After") == "" || !strings.Contains(body, "no space") {
		t.Fatalf("publish on a full disk = %d %s; want 503 saying there is no space", status, body)
	}
	free()
	if status, _, body := httpDo(t, "POST", c.url+"/publish", batch); status != 200 || !strings.Contains(body, `"processed_count":200`) {
		t.Errorf("publish after space was freed = %d %s; want the 200 events stored", status, body)
	}
}
