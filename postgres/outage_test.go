package postgres_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/postgres"
	"github.com/jackc/pgx/v5"
)

// outageProxy forwards TCP connections to the test database while it is
// up. Down cuts every connection and closes each new one at once, as a
// database server that is stopped or restarting would; up lets them
// through again.
type outageProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
	frozen chan struct{} // closed by freeze for the connections open then
}

// startOutageProxy returns a proxy to the test database, up, and a DSN
// that connects through it.
func startOutageProxy(t *testing.T, dsn string) (*outageProxy, string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(cfg.Host, "/") {
		t.Skipf("the test database is reached by a Unix socket (%s); this test needs TCP", cfg.Host)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &outageProxy{ln: ln, target: net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), conns: make(map[net.Conn]bool), frozen: make(chan struct{})}
	t.Cleanup(func() {
		ln.Close()
		p.setDown(true)
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return p, withSettings(dsn, "host", "127.0.0.1", "port", port)
}

// withSettings returns dsn with the given keyword and value pairs added.
func withSettings(dsn string, kv ...string) string {
	for i := 0; i+1 < len(kv); i += 2 {
		switch {
		case !strings.Contains(dsn, "://"):
			dsn += " " + kv[i] + "=" + kv[i+1]
		case strings.Contains(dsn, "?"):
			dsn += "&" + kv[i] + "=" + kv[i+1]
		default:
			dsn += "?" + kv[i] + "=" + kv[i+1]
		}
	}
	return dsn
}

func (p *outageProxy) forward(c net.Conn) {
	if !p.track(c) {
		c.Close()
		return
	}
	s, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(s) {
		c.Close()
		if s != nil {
			s.Close()
		}
		return
	}
	p.mu.Lock()
	frozen := p.frozen
	p.mu.Unlock()
	go func() { pipe(s, c, frozen); s.Close() }()
	pipe(c, s, frozen)
	c.Close()
}

// pipe copies src to dst until src ends or frozen is closed; from then on
// it drops what arrives, answering nothing, until the connection is closed.
func pipe(dst, src net.Conn, frozen <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-frozen:
			io.Copy(io.Discard, src) // the bytes go nowhere, until the connection is closed
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// freeze makes every connection open now forward nothing more while
// staying open, as a network that drops packets without a word does; later
// connections are forwarded.
func (p *outageProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.frozen)
	p.frozen = make(chan struct{})
}

// track records c to be cut at the next setDown(true), unless the proxy is
// down.
func (p *outageProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	p.conns[c] = true
	return true
}

// setDown cuts every connection and refuses new ones (true), or lets them
// through again (false).
func (p *outageProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// TestStoreSurvivesOutage: while the database is unreachable, Publish fails
// at once with ErrStore and Ping fails; once it is back, the same Store
// serves again, without being reopened, and lost nothing acknowledged.
func TestStoreSurvivesOutage(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	p, proxied := startOutageProxy(t, dsn)
	s, err := postgres.Open(t.Context(), proxied, &postgres.Options{Schema: schema, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	agg, err := eventagg.New(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agg.Close(); s.Close() })
	acked := 0
	publish := func(id string) error {
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		defer cancel()
		_, err := agg.Publish(ctx, event("t", id))
		if err == nil {
			acked++
		}
		return err
	}
	if err := publish("before"); err != nil {
		t.Fatalf("Publish before the outage: %v", err)
	}

	p.setDown(true)
	for i := range 3 { // the pool's connections are cut, and no new one opens
		start := time.Now()
		err := publish("during-" + strconv.Itoa(i))
		if !errors.Is(err, eventagg.ErrStore) {
			t.Fatalf("Publish during the outage = %v, want an error matching ErrStore", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Publish during the outage took %v to fail", d)
		}
	}
	if err := agg.Ping(t.Context()); err == nil {
		t.Error("Ping during the outage = nil, want an error")
	}

	p.setDown(false)
	deadline := time.Now().Add(awaitTimeout)
	for publish("after") != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no Publish succeeded within %v of the database coming back", awaitTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := agg.Ping(t.Context()); err != nil {
		t.Errorf("Ping after the outage = %v", err)
	}
	if err := publish("after-2"); err != nil {
		t.Errorf("Publish after the outage: %v", err)
	}
	n := 0
	for _, err := range s.Events(t.Context(), eventagg.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n != acked || st.Stored != int64(acked) || st.Received != st.UniqueProcessed+st.DuplicateDropped {
		t.Errorf("%d events acknowledged, %d listed; counters %+v", acked, n, st.Counts)
	}
}

// TestOpenWaitsForServer: Open retries while the database is unreachable,
// and succeeds once it is back, within ConnectTimeout.
func TestOpenWaitsForServer(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	p, proxied := startOutageProxy(t, dsn)
	p.setDown(true)
	const outage = 700 * time.Millisecond
	time.AfterFunc(outage, func() { p.setDown(false) })
	start := time.Now()
	s, err := postgres.Open(t.Context(), proxied, &postgres.Options{Schema: schema, ConnectTimeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("Open with the database back after %v: %v", outage, err)
	}
	defer s.Close()
	if d := time.Since(start); d < outage || d > outage+5*time.Second {
		t.Errorf("Open returned %v after it began, the database being back after %v", d, outage)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping() = %v", err)
	}
}

// TestOpenGivesUp: Open returns the last error once ConnectTimeout has
// passed, and at once without one.
func TestOpenGivesUp(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	p, proxied := startOutageProxy(t, dsn)
	p.setDown(true)
	if _, err := postgres.Open(t.Context(), proxied, &postgres.Options{ConnectTimeout: -time.Second}); err == nil {
		t.Error("Open(negative ConnectTimeout) succeeded, want an error")
	}
	for _, wait := range []time.Duration{0, 500 * time.Millisecond} {
		start := time.Now()
		_, err := postgres.Open(t.Context(), proxied, &postgres.Options{Schema: newSchema(t, dsn), ConnectTimeout: wait})
		d := time.Since(start)
		if err == nil {
			t.Fatalf("Open(ConnectTimeout %v) through a proxy that is down succeeded", wait)
		}
		if d < wait || d > wait+3*time.Second {
			t.Errorf("Open(ConnectTimeout %v) failed after %v: %v", wait, d, err)
		}
		if wait > 0 && !strings.Contains(err.Error(), "still failing after "+wait.String()) {
			t.Errorf("Open(ConnectTimeout %v) error = %v, want it to say it gave up", wait, err)
		}
	}
}

// TestOpenDoesNotWaitForWrongSettings: an error that waiting cannot cure (a
// role that does not exist) returns at once, whatever ConnectTimeout.
func TestOpenDoesNotWaitForWrongSettings(t *testing.T) {
	t.Parallel()
	dsn := withSettings(testDSN(t), "user", "eventagg_no_such_role")
	start := time.Now()
	_, err := postgres.Open(t.Context(), dsn, &postgres.Options{ConnectTimeout: 20 * time.Second})
	if err == nil {
		t.Fatal("Open as a role that does not exist succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open as a role that does not exist failed after %v, want at once: %v", d, err)
	}
}
