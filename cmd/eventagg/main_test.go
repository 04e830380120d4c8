package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/google/go-cmp/cmp"
)

// TestMain lets the test binary act as the eventagg program: tests start it
// as a child process (with EVENTAGG_TEST_MAIN=1) to kill it for real.
func TestMain(m *testing.M) {
	if os.Getenv("EVENTAGG_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	binOnce sync.Once
	binDir  string // holds the binary serverBinary built
	binErr  error
)

// serverBinary returns the path of the eventagg program built without the
// race detector, for the tests that measure the server's memory: under
// -race, the test binary itself uses several times the memory it would in
// production. It is built once per test run.
func serverBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "eventagg-bin-"); binErr != nil {
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		cmd := exec.Command(goTool, "build", "-o", filepath.Join(binDir, "eventagg"), ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "eventagg")
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logWatcher reads JSON log records and reports the address of the first
// "listening" record.
type logWatcher struct {
	all       syncBuffer
	listening chan string
	eof       chan struct{} // closed when the log has been read to its end

	mu      sync.Mutex
	changed chan struct{} // closed, and replaced, at each new line
}

func watchLogs(r io.Reader) *logWatcher {
	w := &logWatcher{listening: make(chan string, 1), eof: make(chan struct{}), changed: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			w.all.Write(append(sc.Bytes(), '\n'))
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				w.listening <- rec.Addr
			}
			w.mu.Lock()
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
		}
		close(w.listening)
		close(w.eof)
	}()
	return w
}

// await waits until the log holds n lines containing each of parts, and
// fails the test if that takes longer than timeout.
func (w *logWatcher) await(t *testing.T, n int, timeout time.Duration, parts ...string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		changed := w.changed
		w.mu.Unlock()
		if w.count(parts...) >= n {
			return
		}
		select {
		case <-changed:
		case <-w.eof:
			if w.count(parts...) < n {
				t.Fatalf("the log ended with fewer than %d lines holding %q:\n%s", n, parts, w.all.String())
			}
			return
		case <-deadline:
			t.Fatalf("no %d lines holding %q in the log within %v:\n%s", n, parts, timeout, w.all.String())
		}
	}
}

// count returns how many lines of the log contain each of parts.
func (w *logWatcher) count(parts ...string) int {
	n := 0
lines:
	for line := range strings.Lines(w.all.String()) {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue lines
			}
		}
		n++
	}
	return n
}

// address waits for the server to listen and returns its base URL.
func (w *logWatcher) address(t *testing.T) string {
	t.Helper()
	select {
	case addr, ok := <-w.listening:
		if !ok {
			t.Fatalf("the server stopped before listening; its log:\n%s", w.all.String())
		}
		return "http://" + addr
	case <-time.After(60 * time.Second):
		t.Fatalf("the server did not listen within 60s; its log:\n%s", w.all.String())
	}
	return ""
}

// MustRunMain runs run() in this process with args and env until the test
// ends or stop is called; it returns the base URL, stop, and the log.
func MustRunMain(t *testing.T, env map[string]string, args ...string) (url string, stop func() error, logs *logWatcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	logs = watchLogs(pr)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"-log-format", "json"}, args...), func(k string) string { return env[k] }, io.Discard, pw)
		pw.Close()
	}()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
			<-logs.eof // every line run wrote has been read
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return logs.address(t), stop, logs
}

func newClient(t *testing.T, url string) *httpapi.Client {
	t.Helper()
	c, err := httpapi.NewClient(url, &httpapi.ClientOptions{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func httpDo(t *testing.T, method, url, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(data)
}

func TestRunServesEveryEndpoint(t *testing.T) {
	db := filepath.Join(t.TempDir(), "events.db")
	// -max-batch comes from the environment, -db from a flag that beats the environment.
	env := map[string]string{"EVENTAGG_MAX_BATCH": "5", "EVENTAGG_DB": "/nonexistent/ignored.db"}
	url, stop, logs := MustRunMain(t, env, "-addr", "127.0.0.1:0", "-db", db, "-max-body", "4096")
	c := newClient(t, url)
	ctx := t.Context()

	// a/1 again without its payload: a conflict, dropped and counted.
	res, err := c.Publish(ctx, eventagg.Event{Topic: "a", EventID: "1", Payload: json.RawMessage(`{"n": 1}`)},
		eventagg.Event{Topic: "a", EventID: "1"}, eventagg.Event{Topic: "b", EventID: "1"})
	if err != nil || res.Processed != 2 || res.Duplicates != 1 || res.Conflicts != 1 {
		t.Errorf("POST /publish = %+v, %v; want 2 processed, 1 duplicate that is a conflict", res, err)
	}
	checks := []struct {
		method, path, body string
		status             int
		contains           string
	}{
		{"POST", "/publish", `{"topic":"a","event_id":"1","payload":{"n": 1}}`, 200, `{"processed_count":0,"duplicate_dropped":1,"conflicts":0}`},
		{"POST", "/publish?duplicates=true", `[{"topic":"b","event_id":"1","payload":2}]`, 200,
			`{"processed_count":0,"duplicate_dropped":1,"conflicts":1,"duplicate_indexes":[0],"conflict_indexes":[0]}`},
		{"POST", "/publish", `{"topic":"a"}`, 400, `"field":"event_id"`},
		{"POST", "/publish", `[{},{},{},{},{},{}]`, 413, "limit of 5 events"},
		{"POST", "/publish", `"` + strings.Repeat("x", 5000) + `"`, 413, "limit of 4096 bytes"},
		{"GET", "/publish", "", 405, "not allowed"},
		{"GET", "/events?topic=a", "", 200, `"payload":{"n": 1}`},
		{"GET", "/events?limit=1", "", 200, `"event_id":"1"`},
		{"GET", "/events?limit=x", "", 400, `"field":"limit"`},
		{"GET", "/stats", "", 200, `"received":5,"unique_processed":2,"duplicate_dropped":3,"conflicts":2`},
		{"GET", "/health", "", 200, `{"status":"healthy"}`},
		{"GET", "/metrics", "", 200, "eventagg_events_unique_total 2"},
		{"GET", "/metrics", "", 200, "eventagg_events_conflict_total 2"},
		{"GET", "/missing", "", 404, `"error"`},
	}
	for _, ck := range checks {
		status, header, body := httpDo(t, ck.method, url+ck.path, ck.body)
		if status != ck.status || !strings.Contains(body, ck.contains) {
			t.Errorf("%s %s = %d %s; want %d containing %s", ck.method, ck.path, status, body, ck.status, ck.contains)
		}
		if ck.path == "/events?limit=1" && !strings.Contains(header.Get("Link"), `after=`) {
			t.Errorf("GET /events?limit=1 Link = %q, want a next link", header.Get("Link"))
		}
	}

	if err := stop(); err != nil {
		t.Fatalf("run() after cancel = %v, want nil", err)
	}
	for _, msg := range []string{`"msg":"shutting down"`, `"msg":"queue drained"`, `"msg":"store closed"`, `"path":"/publish"`} {
		if !strings.Contains(logs.all.String(), msg) {
			t.Errorf("log lacks %s:\n%s", msg, logs.all.String())
		}
	}

	// Everything is still there after a restart.
	url, _, _ = MustRunMain(t, nil, "-addr", "127.0.0.1:0", "-db", db)
	st, err := newClient(t, url).Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (eventagg.Counts{Received: 5, UniqueProcessed: 2, DuplicateDropped: 3, Conflicts: 2, Stored: 2}); st.Counts != want {
		t.Errorf("after restart Stats() = %+v, want %+v", st.Counts, want)
	}
}

func TestParseConfig(t *testing.T) {
	runConfigCases(t, []configCase{
		{"Defaults", nil, nil, func(c *config) bool {
			return c.addr == ":8080" && c.db == "events.db" && c.sync == "full" && c.maxBody == 16<<20 && c.logFormat == "text" &&
				c.queueSize == eventagg.DefaultQueueSize && c.maxBatch == httpapi.DefaultMaxEventsPerRequest && c.onConflict == "drop"
		}, ""},
		{"OnConflictFromEnv", nil, map[string]string{"EVENTAGG_ON_CONFLICT": "reject"},
			func(c *config) bool { return c.onConflict == "reject" }, ""},
		{"BadOnConflict", []string{"-on-conflict", "keep"}, nil, nil, "-on-conflict must be drop or reject"},
		{"ZeroShutdownTimeout", []string{"-shutdown-timeout", "0s"}, nil, nil, "must be positive"},
		{"EnvFallback", nil, map[string]string{"EVENTAGG_ADDR": ":9000", "EVENTAGG_DB": "/data/x.db", "EVENTAGG_LOG_FORMAT": "json",
			"EVENTAGG_MAX_BODY": "1024", "EVENTAGG_QUEUE_TIMEOUT": "250ms", "EVENTAGG_SYNC": "normal", "EVENTAGG_LOG_LEVEL": "debug"},
			func(c *config) bool {
				return c.addr == ":9000" && c.db == "/data/x.db" && c.logFormat == "json" && c.maxBody == 1024 &&
					c.queueTimeout == 250*time.Millisecond && c.sync == "normal" && c.logLevel.String() == "DEBUG"
			}, ""},
		{"FlagsWin", []string{"-addr", ":7000"}, map[string]string{"EVENTAGG_ADDR": ":9000"},
			func(c *config) bool { return c.addr == ":7000" }, ""},
		{"BadEnv", nil, map[string]string{"EVENTAGG_MAX_BODY": "lots"}, nil, "EVENTAGG_MAX_BODY"},
		{"BadFlag", []string{"-max-batch", "x"}, nil, nil, "invalid value"},
		{"UnknownFlag", []string{"-nope"}, nil, nil, "not defined"},
		{"ExtraArgs", []string{"serve"}, nil, nil, "unexpected arguments"},
		{"BadLogFormat", []string{"-log-format", "xml"}, nil, nil, "text or json"},
		{"BadSync", []string{"-sync", "sometimes"}, nil, nil, "full, normal or off"},
		{"ZeroBatch", []string{"-max-batch", "0"}, nil, nil, "must be positive"},
		{"Listings", []string{"-max-listings", "5", "-write-timeout", "2s"}, nil,
			func(c *config) bool { return c.maxListings == 5 && c.writeTimeout == 2*time.Second }, ""},
		{"ZeroListings", []string{"-max-listings", "0"}, nil, nil, "-max-listings must be positive"},
		{"Followers", nil, map[string]string{"EVENTAGG_MAX_FOLLOWERS": "7"},
			func(c *config) bool { return c.maxFollowers == 7 }, ""},
		{"DefaultFollowers", nil, nil, func(c *config) bool { return c.maxFollowers == httpapi.DefaultMaxFollowers }, ""},
		{"ZeroFollowers", []string{"-max-followers", "0"}, nil, nil, "-max-followers must be positive"},
		{"ZeroWriteTimeout", []string{"-write-timeout", "0s"}, nil, nil, "must be positive"},
		// Flags of the other store are refused, not silently ignored.
		{"PostgresWithSync", []string{"-db", "postgres://h/db", "-sync", "off"}, nil, nil, "-sync applies to SQLite only"},
		{"PostgresWithSQLiteFlags", []string{"-db", "postgres://h/db", "-max-db-size", "10", "-busy-timeout", "1s"}, nil, nil,
			"-max-db-size, -busy-timeout apply to SQLite only"},
		{"PostgresWithSyncFromEnv", nil, map[string]string{"EVENTAGG_DB": "postgresql://h/db", "EVENTAGG_SYNC": "full"}, nil,
			"-sync applies to SQLite only"},
		{"PostgresWithSchema", []string{"-db", "postgres://h/db", "-db-schema", "x"}, nil,
			func(c *config) bool { return c.dbSchema == "x" }, ""},
		{"SQLiteWithSchema", []string{"-db-schema", "x"}, nil, nil, "-db-schema applies to PostgreSQL only"},
		{"Retention", []string{"-retention", "168h", "-dedup-window", "720h"}, nil,
			func(c *config) bool { return c.retention == 168*time.Hour && c.dedupWindow == 720*time.Hour }, ""},
		{"RetentionFromEnv", nil, map[string]string{"EVENTAGG_RETENTION": "1h"}, func(c *config) bool { return c.retention == time.Hour }, ""},
		{"DedupWindowShorter", []string{"-retention", "2h", "-dedup-window", "1h"}, nil, nil, "shorter than -retention"},
		{"DedupWindowAlone", []string{"-dedup-window", "1h"}, nil, nil, "-dedup-window needs -retention"},
		{"NegativeRetention", []string{"-retention", "-1s"}, nil, nil, "must not be negative"},
	})
}

// configCase is a parseConfig table case: either check accepts the config,
// or the error contains wantErr and is a usage error (exit code 2).
type configCase struct {
	name    string
	args    []string
	env     map[string]string
	check   func(*config) bool
	wantErr string
}

func runConfigCases(t *testing.T, tests []configCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || exitCode(err) != 2 {
					t.Fatalf("parseConfig() error = %v, want a usage error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConfig() error: %v", err)
			}
			if !tt.check(c) {
				t.Errorf("parseConfig() = %+v", *c)
			}
		})
	}
}

func TestRunVersionAndHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"-version"}, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "eventagg ") {
		t.Errorf("-version printed %q", stdout.String())
	}
	err := run(t.Context(), []string{"-h"}, func(string) string { return "" }, &stdout, &stderr)
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "EVENTAGG_MAX_BODY") {
		t.Errorf("-h = %v, usage %q; want ErrHelp and usage naming the env variables", err, stderr.String())
	}
}

func TestRunFailsClearly(t *testing.T) {
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	notDB := filepath.Join(dir, "not.db")
	os.WriteFile(notDB, []byte(strings.Repeat("garbage!", 512)), 0o600)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-addr", busy.Addr().String(), "-db", filepath.Join(dir, "a.db")}, "address already in use"},
		{[]string{"-addr", "127.0.0.1:0", "-db", notDB}, "not a database"},
		{[]string{"-addr", "127.0.0.1:0", "-db", filepath.Join(dir, "missing", "x.db")}, "x.db"},
	} {
		err := run(t.Context(), tt.args, func(string) string { return "" }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestHealthcheckMode(t *testing.T) {
	url, _, _ := MustRunMain(t, nil, "-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "events.db"))
	addr := strings.TrimPrefix(url, "http://")
	if err := run(t.Context(), []string{"-healthcheck", "-addr", addr}, func(string) string { return "" }, io.Discard, io.Discard); err != nil {
		t.Errorf("-healthcheck against a healthy server = %v", err)
	}
	_, port, _ := net.SplitHostPort(addr)
	// -addr as the container gives it (":port") also finds the server.
	if err := run(t.Context(), nil, func(k string) string {
		return map[string]string{"EVENTAGG_HEALTHCHECK": "true", "EVENTAGG_ADDR": ":" + port}[k]
	}, io.Discard, io.Discard); err != nil {
		t.Errorf("-healthcheck via the environment = %v", err)
	}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closed.Close()
	if err := run(t.Context(), []string{"-healthcheck", "-addr", closed.Addr().String()}, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
		t.Error("-healthcheck against a closed port = nil, want an error")
	}
}

// child is the eventagg program running as a separate process.
type child struct {
	cmd  *exec.Cmd
	url  string
	logs *logWatcher
}

// startChild runs the test binary as the eventagg program on db.
func startChild(t *testing.T, db string, args ...string) *child {
	t.Helper()
	return startProgram(t, os.Args[0], db, args...)
}

// startProgram runs bin, the test binary or the program itself
// (serverBinary), as the eventagg server on db.
func startProgram(t *testing.T, bin, db string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0", "-db", db, "-log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "EVENTAGG_TEST_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, logs: watchLogs(stderr)}
	t.Cleanup(func() { cmd.Process.Kill(); c.wait() })
	c.url = c.logs.address(t)
	return c
}

// terminate stops the server with SIGTERM, as an orchestrator would, and
// fails the test unless it exits 0.
func (c *child) terminate(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(); err != nil {
		t.Fatalf("after SIGTERM the server exited with %v; its log:\n%s", err, c.logs.all.String())
	}
}

// wait waits for the process to exit, having read all it logged: exec's Wait
// closes the log pipe, so it must come after the reader saw the pipe's end.
func (c *child) wait() error {
	<-c.logs.eof
	return c.cmd.Wait()
}

func TestKillDashNineLosesNothingAcknowledged(t *testing.T) {
	db := filepath.Join(t.TempDir(), "events.db")
	acked := make(map[eventagg.Key]bool)
	var sent eventagg.Counts
	for round := range 3 {
		c := startChild(t, db)
		client := newClient(t, c.url)
		for i := range 5 {
			var batch []eventagg.Event
			for j := range 20 {
				// Half of each batch resends ids of the previous round.
				id := strconv.Itoa(round*100 + i*10 + j)
				if j%2 == 1 && round > 0 {
					id = strconv.Itoa((round-1)*100 + i*10 + j)
				}
				batch = append(batch, eventagg.Event{Topic: "t" + strconv.Itoa(j%3), EventID: id, Payload: json.RawMessage(`{"round":` + strconv.Itoa(round) + `}`)})
			}
			res, err := client.Publish(t.Context(), batch...)
			if err != nil {
				t.Fatalf("round %d: Publish: %v", round, err)
			}
			sent.Received += int64(len(batch))
			sent.UniqueProcessed += int64(res.Processed)
			sent.Stored += int64(res.Processed)
			sent.DuplicateDropped += int64(res.Duplicates)
			sent.Conflicts += int64(res.Conflicts) // a resent id carries another round's payload
			for _, e := range batch {
				acked[e.Key()] = true
			}
		}
		// Right after the last 200: SIGKILL, no chance to close anything.
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.wait()
	}

	c := startChild(t, db)
	client := newClient(t, c.url)
	stored := make(map[eventagg.Key]int)
	for e, err := range client.Events(t.Context(), eventagg.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		stored[e.Key()]++
	}
	for k := range acked {
		if stored[k] != 1 {
			t.Errorf("acknowledged event %v stored %d times after SIGKILL, want 1", k, stored[k])
		}
	}
	if len(stored) != len(acked) {
		t.Errorf("%d events stored, %d distinct acknowledged", len(stored), len(acked))
	}
	st, err := client.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sent, st.Counts); diff != "" {
		t.Errorf("counters after SIGKILL differ from what the 200s reported (-acknowledged +stored):\n%s", diff)
	}
}

func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	db := filepath.Join(t.TempDir(), "events.db")
	c := startChild(t, db)
	if _, err := newClient(t, c.url).Publish(t.Context(), eventagg.Event{Topic: "t", EventID: "1"}); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(); err != nil {
		t.Fatalf("after SIGTERM the process ended with %v, want exit 0; log:\n%s", err, c.logs.all.String())
	}
	for _, msg := range []string{"shutting down", "queue drained", "store closed"} {
		if !strings.Contains(c.logs.all.String(), fmt.Sprintf(`"msg":%q`, msg)) {
			t.Errorf("log lacks %q:\n%s", msg, c.logs.all.String())
		}
	}
}

// TestHelpExitsZero: -h prints the usage and exits 0 (asked for, not an
// error); an unknown flag exits 2 with the usage.
func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		arg  string
		code int
	}{{"-h", 0}, {"-help", 0}, {"-no-such-flag", 2}} {
		cmd := exec.Command(os.Args[0], c.arg)
		cmd.Env = append(os.Environ(), "EVENTAGG_TEST_MAIN=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code || !strings.Contains(stderr.String(), "Usage: eventagg") {
			t.Errorf("eventagg %s: exit %d, stderr %q; want exit %d and the usage", c.arg, code, stderr.String(), c.code)
		}
	}
}
