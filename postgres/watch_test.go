package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/postgres"
	"github.com/jackc/pgx/v5"
)

// awaitTimeout bounds every wait for something that should happen soon.
const awaitTimeout = 20 * time.Second

// watching is a Watch running in the background, counting its calls of changed.
type watching struct {
	calls  atomic.Int64
	called chan struct{} // receives after each call, dropped if full
	done   chan error    // receives what Watch returned
	cancel context.CancelFunc
}

// startWatch runs s.Watch until tb ends, and waits for its first call of
// changed, which comes once it listens.
func startWatch(tb testing.TB, s *postgres.Store) *watching {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watching{called: make(chan struct{}, 1), done: make(chan error, 1), cancel: cancel}
	go func() {
		w.done <- s.Watch(ctx, func() {
			w.calls.Add(1)
			select {
			case w.called <- struct{}{}:
			default:
			}
		})
	}()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(awaitTimeout):
			tb.Errorf("Watch did not return within %v of its context ending", awaitTimeout)
		}
	})
	w.await(tb, 1)
	return w
}

// await waits until changed has been called at least n times in all.
func (w *watching) await(tb testing.TB, n int64) {
	tb.Helper()
	timeout := time.After(awaitTimeout)
	for w.calls.Load() < n {
		select {
		case <-w.called:
		case err := <-w.done:
			tb.Fatalf("Watch returned %v while awaiting call #%d", err, n)
		case <-timeout:
			tb.Fatalf("changed called %d times, want at least %d within %v", w.calls.Load(), n, awaitTimeout)
		}
	}
}

// returned waits for Watch to return and gives its error.
func (w *watching) returned(tb testing.TB) error {
	tb.Helper()
	select {
	case err := <-w.done:
		w.done <- err // for the cleanup
		return err
	case <-time.After(awaitTimeout):
		tb.Fatalf("Watch did not return within %v", awaitTimeout)
		return nil
	}
}

func mustAppend(tb testing.TB, s eventagg.Store, opts eventagg.AppendOptions, events ...eventagg.Event) []eventagg.Outcome {
	tb.Helper()
	outcomes, err := s.Append(tb.Context(), events, opts)
	if err != nil {
		tb.Fatalf("Append error: %v", err)
	}
	return outcomes
}

// listenerPIDs returns the backends that listen on schema's channel, by the
// LISTEN they ran last.
func listenerPIDs(tb testing.TB, dsn, schema string) []int32 {
	tb.Helper()
	conn, err := pgx.Connect(tb.Context(), dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, _ := conn.Query(tb.Context(), `SELECT pid FROM pg_stat_activity WHERE query = $1 ORDER BY pid`,
		"LISTEN "+pgx.Identifier{"eventagg." + schema}.Sanitize())
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		tb.Fatal(err)
	}
	return pids
}

// TestWatchWokenByOtherReplica: an Append on one Store wakes the Watch of
// another Store on the same schema, as of another replica.
func TestWatchWokenByOtherReplica(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	a, b := MustOpen(t, dsn, schema), MustOpen(t, dsn, schema)
	w := startWatch(t, b)
	for i := range 3 {
		mustAppend(t, a, eventagg.AppendOptions{}, event("t", fmt.Sprint("e", i)))
		w.await(t, int64(2+i))
	}
}

// TestWatchNotWokenWithoutNewEvents: Appends that store nothing (duplicates,
// a rejected conflict), Appends to another schema and notifications of
// the channel with another payload do not call changed. Notifications
// reach a listener in commit order, so once an Append that stores an event
// has woken the Watch, any notification of the earlier ones would have
// arrived before it.
func TestWatchNotWokenWithoutNewEvents(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	a, b := MustOpen(t, dsn, schema), MustOpen(t, dsn, schema)
	other := MustOpen(t, dsn, newSchema(t, dsn))
	mustAppend(t, a, eventagg.AppendOptions{}, event("t", "stored"))
	w := startWatch(t, b)

	mustAppend(t, other, eventagg.AppendOptions{}, event("t", "elsewhere"))
	mustAppend(t, a, eventagg.AppendOptions{}, event("t", "stored"), event("t", "stored"))
	if _, err := a.Append(t.Context(), []eventagg.Event{event("t", "new"), withPayload(event("t", "stored"), `{"other":1}`)},
		eventagg.AppendOptions{RejectConflicts: true}); !errors.As(err, new(*eventagg.ConflictError)) {
		t.Fatalf("Append of a conflict with RejectConflicts: error %v, want a ConflictError", err)
	}
	exec(t, dsn, `SELECT pg_notify($1, 'another schema')`, "eventagg."+schema)
	mustAppend(t, a, eventagg.AppendOptions{}, event("t", "wakes"))
	w.await(t, 2)
	if n := w.calls.Load(); n != 2 {
		t.Errorf("changed called %d times, want 2: once listening, once for the one Append that stored an event", n)
	}
}

// TestWatchLongSchemaName: a schema whose name does not fit in a channel
// name after the prefix is notified on a channel named by a hash.
func TestWatchLongSchemaName(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	schema += "_" + strings.Repeat("x", 62-len(schema))
	t.Cleanup(func() { exec(t, dsn, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`) })
	a, b := MustOpen(t, dsn, schema), MustOpen(t, dsn, schema)
	w := startWatch(t, b)
	mustAppend(t, a, eventagg.AppendOptions{}, event("t", "e"))
	w.await(t, 2)
}

// TestWatchReconnects: when its connection is terminated, Watch connects
// again, calls changed once it listens, and is woken by Appends again.
func TestWatchReconnects(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	a, b := MustOpen(t, dsn, schema), MustOpen(t, dsn, schema)
	w := startWatch(t, b)
	pids := listenerPIDs(t, dsn, schema)
	if len(pids) != 1 {
		t.Fatalf("listening backends %v, want one", pids)
	}
	exec(t, dsn, `SELECT pg_terminate_backend($1)`, pids[0])
	w.await(t, 2) // listening again
	if again := listenerPIDs(t, dsn, schema); len(again) != 1 || again[0] == pids[0] {
		t.Errorf("listening backends %v after terminating %d, want another one", again, pids[0])
	}
	mustAppend(t, a, eventagg.AppendOptions{}, event("t", "e"))
	w.await(t, 3)
}

// TestWatchEndsWithContext: Watch returns ctx's error once ctx ends.
func TestWatchEndsWithContext(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	w := startWatch(t, MustOpen(t, dsn, newSchema(t, dsn)))
	w.cancel()
	if err := w.returned(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v, want context.Canceled", err)
	}
}

// TestWatchEndsOnClose: Close ends a Watch under way, which returns
// ErrClosed, and a Watch after Close returns ErrClosed at once.
func TestWatchEndsOnClose(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	s := MustOpen(t, dsn, schema)
	w := startWatch(t, s)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close() error: %v", err)
		}
	case <-time.After(awaitTimeout):
		t.Fatalf("Close did not return within %v while Watch ran", awaitTimeout)
	}
	if err := w.returned(t); !errors.Is(err, eventagg.ErrClosed) {
		t.Errorf("Watch returned %v after Close, want ErrClosed", err)
	}
	// The backend exits soon after the connection closes.
	deadline := time.Now().Add(awaitTimeout)
	for pids := listenerPIDs(t, dsn, schema); len(pids) != 0; pids = listenerPIDs(t, dsn, schema) {
		if time.Now().After(deadline) {
			t.Fatalf("backends %v still listen %v after Close", pids, awaitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Watch(t.Context(), func() { t.Error("changed called after Close") }); !errors.Is(err, eventagg.ErrClosed) {
		t.Errorf("Watch after Close returned %v, want ErrClosed", err)
	}
}

// TestFollowAcrossReplicas: a follower of one Aggregator receives the events
// that another Aggregator on the same schema publishes after it started,
// woken by a notification rather than by the safety poll.
func TestFollowAcrossReplicas(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	agg1, agg2 := mustNew(t, MustOpen(t, dsn, schema)), mustNew(t, MustOpen(t, dsn, schema))
	type item struct {
		e   eventagg.Event
		err error
		at  time.Time
	}
	got := make(chan item)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		for e, err := range agg2.Follow(ctx, eventagg.Query{}) {
			select {
			case got <- item{e, err, time.Now()}:
			case <-ctx.Done():
				return
			}
		}
	}()
	next := func(id string) item {
		t.Helper()
		select {
		case it := <-got:
			if it.err != nil {
				t.Fatalf("Follow yielded error %v, want event %s", it.err, id)
			}
			if it.e.EventID != id {
				t.Fatalf("Follow yielded event %s, want %s", it.e.EventID, id)
			}
			return it
		case <-time.After(awaitTimeout):
			t.Fatalf("Follow yielded nothing within %v, want event %s", awaitTimeout, id)
			return item{}
		}
	}
	// The first event arrives once the follower waits, by whichever way;
	// the follower is waiting, and its Aggregator watching, by the second.
	if _, err := agg1.Publish(t.Context(), event("t", "first")); err != nil {
		t.Fatalf("Publish error: %v", err)
	}
	next("first")
	for _, id := range []string{"second", "third"} {
		if _, err := agg1.Publish(t.Context(), event("t", id)); err != nil {
			t.Fatalf("Publish error: %v", err)
		}
		published := time.Now()
		if it := next(id); it.at.Sub(published) >= eventagg.WatchPoll/2 {
			t.Errorf("event %s followed %v after Publish returned: by the %v safety poll, not by a notification",
				id, it.at.Sub(published), eventagg.WatchPoll)
		}
	}
}

// stallingProxy forwards TCP connections to the test database until stall
// is called; from then on it drops them and holds new ones open without
// an answer, as a server that hangs would.
type stallingProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	stalled bool
	conns   []net.Conn
	held    chan struct{} // receives when a connection is held
}

// startProxy returns a proxy to the test database and a DSN that connects through it.
func startProxy(t *testing.T, dsn string) (*stallingProxy, string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(cfg.Host, "/") {
		t.Skipf("the test database is reached by a Unix socket (%s); this test needs TCP", cfg.Host)
	}
	target := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{ln: ln, held: make(chan struct{}, 1)}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			stalled := p.stalled
			p.mu.Unlock()
			if stalled {
				select {
				case p.held <- struct{}{}:
				default:
				}
				continue
			}
			go func() {
				s, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				p.mu.Lock()
				p.conns = append(p.conns, s)
				p.mu.Unlock()
				go func() { io.Copy(s, c); s.Close() }()
				io.Copy(c, s)
				c.Close()
			}()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if strings.Contains(dsn, "://") {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		return p, dsn + sep + "host=127.0.0.1&port=" + port
	}
	return p, dsn + " host=127.0.0.1 port=" + port
}

// stall drops every connection and holds the new ones without an answer.
func (p *stallingProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestWatchEndsOnCloseWhileReconnecting: Close ends a Watch that is
// reconnecting to a server that does not answer, well before the bound of
// its connection attempt.
func TestWatchEndsOnCloseWhileReconnecting(t *testing.T) {
	t.Parallel()
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	p, proxied := startProxy(t, dsn)
	s := MustOpen(t, proxied, schema)
	w := startWatch(t, s)
	p.stall()
	select {
	case <-p.held: // Watch is connecting again, and waits for an answer
	case <-time.After(awaitTimeout):
		t.Fatalf("Watch did not reconnect within %v of losing its connection", awaitTimeout)
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Errorf("Close() error: %v", err)
	}
	if err := w.returned(t); !errors.Is(err, eventagg.ErrClosed) {
		t.Errorf("Watch returned %v after Close, want ErrClosed", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close and Watch returned %v after Close began, want much less than the 10s bound of a connection attempt", d)
	}
}
