package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/jackc/pgx/v5"
)

// envPGRestart enables TestPostgresRestartUnderLoad, which stops and starts
// the PostgreSQL server of EVENTAGG_TEST_POSTGRES: every other test using
// that server meanwhile fails, so .ci/run runs it alone, after the others.
const envPGRestart = "EVENTAGG_TEST_PG_RESTART"

func TestParseConfigPostgresPoolAndConnect(t *testing.T) {
	runConfigCases(t, []configCase{
		{"Defaults", []string{"-db", "postgres://h/db"}, nil,
			func(c *config) bool { return c.dbPoolSize == 0 && c.dbConnect == 30*time.Second }, ""},
		{"Flags", []string{"-db", "postgres://h/db", "-db-pool-size", "16", "-db-connect-timeout", "2m"}, nil,
			func(c *config) bool { return c.dbPoolSize == 16 && c.dbConnect == 2*time.Minute }, ""},
		{"FromEnv", nil, map[string]string{"EVENTAGG_DB": "postgres://h/db", "EVENTAGG_DB_POOL_SIZE": "3", "EVENTAGG_DB_CONNECT_TIMEOUT": "0s"},
			func(c *config) bool { return c.dbPoolSize == 3 && c.dbConnect == 0 }, ""},
		{"NegativePool", []string{"-db", "postgres://h/db", "-db-pool-size", "-1"}, nil, nil, "-db-pool-size must be between 0 and"},
		{"HugePool", []string{"-db", "postgres://h/db", "-db-pool-size", "4294967296"}, nil, nil, "-db-pool-size must be between 0 and"},
		{"NegativeConnect", []string{"-db", "postgres://h/db", "-db-connect-timeout", "-1s"}, nil, nil, "-db-connect-timeout must not be negative"},
		{"WriteTimeout", []string{"-db", "postgres://h/db", "-db-write-timeout", "5s"}, nil,
			func(c *config) bool { return c.dbWrite == 5*time.Second }, ""},
		{"ZeroWriteTimeout", []string{"-db", "postgres://h/db", "-db-write-timeout", "0s"}, nil, nil, "-db-write-timeout must be positive"},
		{"SQLiteWithWriteTimeout", []string{"-db-write-timeout", "5s"}, nil, nil, "-db-write-timeout applies to PostgreSQL only"},
		{"SQLiteWithPool", []string{"-db-pool-size", "4"}, nil, nil, "-db-pool-size applies to PostgreSQL only"},
		{"SQLiteWithBoth", nil, map[string]string{"EVENTAGG_DB_POOL_SIZE": "4", "EVENTAGG_DB_CONNECT_TIMEOUT": "1s"}, nil,
			"-db-pool-size, -db-connect-timeout apply to PostgreSQL only"},
	})
}

// cluster is the local PostgreSQL server of the test database, driven with
// pg_ctlcluster (Debian's postgresql-common).
type cluster struct {
	dsn           string
	version, name string
}

// localCluster finds the cluster serving dsn on this machine, and makes sure
// that it runs again when t ends, whatever happened.
func localCluster(t *testing.T, dsn string) *cluster {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	switch cfg.Host {
	case "127.0.0.1", "::1", "localhost":
	default:
		if !strings.HasPrefix(cfg.Host, "/") {
			t.Fatalf("%s=1 restarts the test database's server, which must be on this machine; EVENTAGG_TEST_POSTGRES names host %q", envPGRestart, cfg.Host)
		}
	}
	out, err := exec.Command("pg_lsclusters", "-h").Output()
	if err != nil {
		t.Fatalf("%s=1 needs pg_lsclusters and pg_ctlcluster (postgresql-common) to restart the server: %v", envPGRestart, err)
	}
	c := &cluster{dsn: dsn}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() { // version cluster port status owner directory log
		f := strings.Fields(sc.Text())
		if len(f) >= 3 && f[2] == strconv.Itoa(int(cfg.Port)) {
			c.version, c.name = f[0], f[1]
		}
	}
	if c.name == "" {
		t.Fatalf("no cluster on port %d in pg_lsclusters:\n%s", cfg.Port, out)
	}
	t.Cleanup(func() {
		if c.ready(context.Background()) {
			return
		}
		t.Logf("starting PostgreSQL %s/%s again after the test", c.version, c.name)
		if err := c.ctl("start"); err != nil {
			t.Errorf("PostgreSQL %s/%s is left stopped: %v", c.version, c.name, err)
		}
	})
	return c
}

// ctl runs pg_ctlcluster with args after the cluster's name: start (it
// returns a while after the server accepts connections), stop -m fast (it
// ends the sessions and aborts their transactions, as a restart for
// maintenance does) or stop -m immediate (as a crash: the server recovers
// from its log at the next start).
func (c *cluster) ctl(args ...string) error {
	args = append([]string{"--skip-systemctl-redirect", c.version, c.name}, args...)
	out, err := exec.Command("pg_ctlcluster", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctlcluster %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// ready reports whether the server answers a query.
func (c *cluster) ready(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.dsn)
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx) == nil
}

// outageLoad is what the publishers of TestPostgresRestartUnderLoad saw.
type outageLoad struct {
	mu        sync.Mutex
	acked     map[eventagg.Key]bool // in batches answered 200
	events    int64                 // in the batches answered 200, resends included
	processed int64
	dups      int64
	unavail   []time.Time         // when each 503 with Retry-After came
	failed    [][]eventagg.Event  // the batches answered 503, to resend
	bad       map[string]int      // any other answer: a 500, a hang, a refused connection
	lastOK    map[int][]time.Time // per server, when its 200s came
}

// publish sends batch through client and records the answer.
func (l *outageLoad) publish(ctx context.Context, server int, client *httpapi.Client, batch []eventagg.Event) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	res, err := client.Publish(ctx, batch...)
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var apiErr *httpapi.APIError
	switch {
	case err == nil:
		l.events += int64(len(batch))
		l.processed += int64(res.Processed)
		l.dups += int64(res.Duplicates)
		for _, e := range batch {
			l.acked[e.Key()] = true
		}
		l.lastOK[server] = append(l.lastOK[server], now)
	case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusServiceUnavailable &&
		apiErr.RetryAfter > 0 && errors.Is(err, eventagg.ErrStore):
		l.unavail = append(l.unavail, now)
	default:
		msg := err.Error()
		if ctx.Err() != nil {
			msg = fmt.Sprintf("no answer within %v: %v", publishTimeout, err)
		}
		l.bad[msg]++
	}
	return err
}

// publishTimeout bounds every publish: PostgreSQL being down must get an
// answer (503), not a hang.
const publishTimeout = 10 * time.Second

// TestPostgresRestartUnderLoad stops the real PostgreSQL server for a few
// seconds while two eventagg processes on one schema take publishes from
// eight clients, then starts it again; once with a fast stop, once as a
// crash (immediate stop, recovery at start), which leaves commits in
// doubt. The publishes answer 503 with Retry-After (never a 500 or a
// hang), /health answers 503 while the database is down and 200 after, the
// servers recover without being restarted, and a third one started during
// the outage waits for the database, then serves. Every failed batch is
// then resent, as a client would, and every acknowledged event is listed
// exactly once, with counters that agree.
func TestPostgresRestartUnderLoad(t *testing.T) {
	if os.Getenv(envPGRestart) != "1" {
		t.Skipf("set %s=1 to stop and start the local PostgreSQL server under load (it breaks every other test using the server meanwhile; .ci/run runs it alone)", envPGRestart)
	}
	for _, tt := range []struct {
		name string
		mode string // of pg_ctlcluster stop
		down time.Duration
	}{
		{"FastStop", "fast", 3 * time.Second},
		{"Crash", "immediate", 2 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) { testPostgresOutage(t, tt.mode, tt.down) })
	}
}

func testPostgresOutage(t *testing.T, mode string, down time.Duration) {
	dsn, schema := postgresSchema(t)
	pg := localCluster(t, dsn) // after postgresSchema: its cleanup runs first, so the schema can be dropped
	args := []string{"-db-schema", schema, "-db-pool-size", "4", "-db-connect-timeout", "30s"}
	servers := []*child{startChild(t, dsn, args...), startChild(t, dsn, args...)}

	load := &outageLoad{acked: make(map[eventagg.Key]bool), bad: make(map[string]int), lastOK: make(map[int][]time.Time)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const publishers, batchSize = 8, 10
	for p := range publishers {
		wg.Go(func() {
			server := p % len(servers)
			client := newClient(t, servers[server].url)
			var mine []string // the ids sent so far, some of which are sent again
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				batch := make([]eventagg.Event, batchSize)
				for i := range batch {
					id := fmt.Sprintf("p%d-%d-%d", p, n, i)
					if i < 2 && len(mine) > batchSize {
						id = mine[(n*7+i*13)%len(mine)]
					} else {
						mine = append(mine, id)
					}
					batch[i] = eventagg.Event{Topic: "restart", EventID: id, Payload: []byte(`{"n":` + strconv.Itoa(n) + `}`)}
				}
				if err := load.publish(context.Background(), server, client, batch); err != nil {
					load.mu.Lock()
					load.failed = append(load.failed, batch)
					load.mu.Unlock()
					time.Sleep(20 * time.Millisecond) // a client's pause before it sends more
				}
			}
		})
	}
	defer func() { // on a failure midway too
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	// Health: each server's answers to GET /health, every 50ms, in order.
	type probe struct {
		at     time.Time
		status int // 200, 503, or 0 for anything else
	}
	var (
		healthMu sync.Mutex
		health   = make([][]probe, len(servers))
	)
	for i, s := range servers {
		wg.Go(func() {
			client := newClient(t, s.url)
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := client.Health(ctx)
				cancel()
				p := probe{at: time.Now(), status: http.StatusOK}
				if err != nil {
					p.status = 0
					if apiErr, ok := errors.AsType[*httpapi.APIError](err); ok && apiErr.StatusCode == http.StatusServiceUnavailable {
						p.status = apiErr.StatusCode
					}
				}
				healthMu.Lock()
				health[i] = append(health[i], p)
				healthMu.Unlock()
			}
		})
	}

	time.Sleep(1500 * time.Millisecond) // under load
	stopping := time.Now()
	if err := pg.ctl("stop", "-m", mode); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// After down, start the server, and note when it first answers.
	var starting, ready time.Time
	back := make(chan struct{})
	t.Cleanup(func() { <-back }) // before localCluster's, should the test stop midway
	go func() {
		defer close(back)
		time.Sleep(down)
		starting = time.Now()
		startErr := make(chan error, 1)
		go func() { startErr <- pg.ctl("start") }()
		for !pg.ready(context.Background()) {
			select {
			case err := <-startErr:
				if err != nil {
					t.Error(err)
					return
				}
				startErr <- nil
			case <-time.After(25 * time.Millisecond):
			}
		}
		ready = time.Now()
		if err := <-startErr; err != nil {
			t.Error(err)
		}
	}()
	// A replica starting while the database is down waits for it.
	late := startChild(t, dsn, args...)
	listened := time.Now()
	<-back
	if ready.IsZero() {
		t.Fatal("PostgreSQL did not start again")
	}
	if listened.Before(starting) {
		t.Errorf("the replica started during the outage listened %v before PostgreSQL was started again", starting.Sub(listened))
	}

	// Recovery: a 200 from both servers after the database is back.
	recovered := make([]time.Duration, len(servers))
	deadline := time.Now().Add(30 * time.Second)
	for i := range servers {
		for {
			load.mu.Lock()
			var first time.Time
			for _, at := range load.lastOK[i] {
				if at.After(ready) {
					first = at
					break
				}
			}
			load.mu.Unlock()
			if !first.IsZero() {
				recovered[i] = first.Sub(ready)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("server %d: no publish succeeded within 30s of PostgreSQL starting again; its log:\n%s", i, servers[i].logs.all.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(time.Second) // under load again
	close(stop)
	wg.Wait()

	for i, s := range servers {
		if err := s.cmd.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatalf("server %d is no longer running: %v; its log:\n%s", i, err, s.logs.all.String())
		}
	}
	for msg, n := range load.bad {
		t.Errorf("%d publishes failed otherwise than with 503 + Retry-After (store_unavailable): %s", n, msg)
	}
	if len(load.unavail) == 0 {
		t.Errorf("no publish got 503 while PostgreSQL was down for %v", down)
	}
	var healthDown time.Duration // the longest run of 503s from /health
	for i := range servers {
		var first503, last503 time.Time
		healthy := false
		for _, p := range health[i] {
			switch {
			case p.status == 0:
				t.Errorf("server %d: GET /health %v after the stop began answered neither 200 nor 503", i, p.at.Sub(stopping))
			case p.status == http.StatusServiceUnavailable && p.at.After(stopping):
				if first503.IsZero() {
					first503 = p.at
				}
				last503 = p.at
			case p.status == http.StatusOK && !last503.IsZero():
				healthy = true
			}
		}
		if first503.IsZero() || !healthy {
			t.Errorf("server %d: GET /health answered 503 during the outage: %v, then 200: %v", i, !first503.IsZero(), healthy)
		}
		healthDown = max(healthDown, last503.Sub(first503))
	}

	// Every batch that failed is resent, as a client would: resending is safe.
	client := newClient(t, servers[0].url)
	for _, batch := range load.failed {
		for attempt := 0; load.publish(t.Context(), 0, client, batch) != nil; attempt++ {
			if attempt == 20 {
				t.Fatalf("a resend keeps failing after recovery: %v", load.bad)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	listed := make(map[eventagg.Key]int)
	for e, err := range newClient(t, servers[1].url).Events(t.Context(), eventagg.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		listed[e.Key()]++
	}
	lost, twice := 0, 0
	for k := range load.acked {
		switch listed[k] {
		case 0:
			lost++
		case 1:
		default:
			twice++
		}
	}
	if lost > 0 || twice > 0 || len(listed) != len(load.acked) {
		t.Errorf("of %d acknowledged events, %d are not listed and %d listed more than once; %d listed in all",
			len(load.acked), lost, twice, len(listed))
	}
	var received int64
	for i, s := range append(servers, late) {
		st, err := newClient(t, s.url).Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		c := st.Counts
		if c.Received != c.UniqueProcessed+c.DuplicateDropped || c.UniqueProcessed != c.Stored || c.Stored != int64(len(listed)) {
			t.Errorf("server %d: counters disagree: %+v, with %d events listed", i, c, len(listed))
		}
		if c.Received < load.events {
			t.Errorf("server %d: %d events received, fewer than the %d in batches answered 200", i, c.Received, load.events)
		}
		received = c.Received
	}
	for _, s := range append(servers, late) {
		s.terminate(t)
	}
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	var first503, last503 time.Duration
	if n := len(load.unavail); n > 0 {
		first503, last503 = load.unavail[0].Sub(stopping), load.unavail[n-1].Sub(stopping)
	}
	t.Logf("stop -m %s took %v; PostgreSQL answered again %v after the stop began (start ran %v after the stop), "+
		"%d publishes got 503 + Retry-After, from %v to %v after the stop began, none another error; /health answered 503 for %v; "+
		"first 200 from each server %v and %v after PostgreSQL answered; the replica started during the outage listened %v after; "+
		"%d failed batches resent; %d events acknowledged, %d listed once each, 0 lost; "+
		"%d events counted in batches answered 503 (commits in doubt, counted again as duplicates when resent)",
		mode, ms(stopped.Sub(stopping)), ms(ready.Sub(stopping)), ms(starting.Sub(stopped)),
		len(load.unavail), ms(first503), ms(last503), ms(healthDown),
		ms(recovered[0]), ms(recovered[1]), ms(listened.Sub(ready)),
		len(load.failed), len(load.acked), len(listed), received-load.events)
}
