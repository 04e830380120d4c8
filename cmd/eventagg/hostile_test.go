package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
)

// trickle writes data to conn one byte every interval until it is all
// written, conn fails, or stop is closed.
func trickle(conn net.Conn, data string, interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := range len(data) {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if _, err := conn.Write([]byte{data[i]}); err != nil {
			return
		}
	}
}

// TestSlowClientIsCut sends requests a byte at a time, slower than the
// server's -read-header-timeout and -read-timeout allow: the server closes
// the connection (after a 408 JSON error for a slow body) long before the
// client would have finished, and stores nothing.
func TestSlowClientIsCut(t *testing.T) {
	const body = `[{"topic":"slow","event_id":"1"}]`
	tests := []struct {
		name, head, slow string
		status           string // the answer expected before the close, if any
	}{
		{"SlowHeaders", "POST /publish HTTP/1.1\r\nHost: eventagg\r\n", "X-Slow: " + strings.Repeat("z", 200) + "\r\n\r\n", ""},
		{"SlowBody", "POST /publish HTTP/1.1\r\nHost: eventagg\r\nContent-Type: application/json\r\nContent-Length: " +
			"200\r\n\r\n", body + strings.Repeat(" ", 200-len(body)), "HTTP/1.1 408 "},
	}
	url, _, _ := MustRunMain(t, nil, "-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "events.db"),
		"-read-header-timeout", "300ms", "-read-timeout", "600ms")
	addr := strings.TrimPrefix(url, "http://")
	t.Run("Clients", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				slowClient(t, addr, tt.head, tt.slow, tt.status)
			})
		}
	})
	if st, err := newClient(t, url).Stats(t.Context()); err != nil || st.Received != 0 {
		t.Errorf("Stats() = %+v, %v; want nothing stored from slow clients", st.Counts, err)
	}
}

func slowClient(t *testing.T, addr, head, slow, status string) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	// At 40ms a byte, the slow part takes over 8s to send.
	stop := make(chan struct{})
	defer close(stop)
	go trickle(conn, slow, 40*time.Millisecond, stop)
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	answer, err := io.ReadAll(conn) // until the server closes
	took := time.Since(start)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("the server kept the slow connection open for %v", took)
	}
	if took > 5*time.Second {
		t.Errorf("the server closed the slow connection after %v; want about its read timeout", took)
	}
	if status != "" && (!strings.HasPrefix(string(answer), status) || !strings.Contains(string(answer), `{"error":`)) {
		t.Errorf("answer before the close = %q, want %s with a JSON error", answer, status)
	}
	if strings.Contains(string(answer), " 200 ") {
		t.Errorf("a slow request was answered %q", answer)
	}
}

// TestIdleConnectionsAreClosed opens many connections that send nothing and
// many that made one request and stay idle: the server keeps serving
// others meanwhile, and closes them all after -read-header-timeout and
// -idle-timeout.
func TestIdleConnectionsAreClosed(t *testing.T) {
	url, _, _ := MustRunMain(t, nil, "-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "events.db"),
		"-read-header-timeout", "500ms", "-idle-timeout", "500ms")
	addr := strings.TrimPrefix(url, "http://")
	const each = 100
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 2 * each {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		if i < each {
			continue // silent
		}
		if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: eventagg\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("GET /health on connection %d = %d (close %v), want 200 kept alive", i, resp.StatusCode, resp.Close)
		}
	}
	// All are open; the server still serves.
	if res, err := newClient(t, url).Publish(t.Context(), eventagg.Event{Topic: "t", EventID: "1"}); err != nil || res.Processed != 1 {
		t.Fatalf("Publish with %d connections open = %+v, %v", len(conns), res, err)
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := c.Read(make([]byte, 1))
			if n != 0 || !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
				t.Errorf("connection %d: Read = %d, %v; want it closed by the server", i, n, err)
			}
		})
	}
	wg.Wait()
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestGzipThroughServer publishes a gzipped body and a gzip bomb to the
// real server: the first is stored, the second, an endless stream of
// compressed zeros, refused with 413.
func TestGzipThroughServer(t *testing.T) {
	url, _, _ := MustRunMain(t, nil, "-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "events.db"), "-max-body", "65536")
	post := func(body io.Reader) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), "POST", url+"/publish", body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Encoding", "gzip")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(`[{"topic":"gz","event_id":"1"}]`))
	zw.Close()
	if status, body := post(&b); status != 200 {
		t.Errorf("gzipped publish = %d %s", status, body)
	}

	bomb := endlessGzip(t, `[{"topic":"gz","event_id":"2","payload":"`)
	if status, body := post(bomb); status != 413 || !strings.Contains(body, "decompressed request body is over the limit") {
		t.Errorf("gzip bomb = %d %s, want 413", status, body)
	}
}

// endlessGzip returns a gzip stream of prefix and then zeros that never
// ends: a gzip bomb of unbounded size. It repeats one compressed block,
// so producing it costs nothing.
func endlessGzip(t *testing.T, prefix string) io.Reader {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zeros := make([]byte, 64<<10)
	zw.Write([]byte(prefix))
	zw.Write(zeros)
	zw.Flush()
	head := bytes.Clone(b.Bytes())
	b.Reset()
	// The window behind this block holds only zeros, so the block decodes
	// to the same zeros wherever it is repeated.
	zw.Write(zeros)
	if err := zw.Flush(); err != nil {
		t.Fatal(err)
	}
	return io.MultiReader(bytes.NewReader(head), &repeater{chunk: bytes.Clone(b.Bytes())})
}

// repeater reads chunk over and over.
type repeater struct {
	chunk []byte
	off   int
}

func (r *repeater) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.chunk[r.off:])
		n += c
		r.off = (r.off + c) % len(r.chunk)
	}
	return n, nil
}
