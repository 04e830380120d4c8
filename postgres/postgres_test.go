package postgres_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/driver"
	"github.com/eventagg/eventagg/postgres"
	"github.com/eventagg/eventagg/storetest"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

// envDSN names the environment variable holding the DSN of the test database.
// Every test creates its own schema in it and drops it when done.
const envDSN = "EVENTAGG_TEST_POSTGRES"

// reachable checks once per process that the test database answers.
var reachable = sync.OnceValues(func() (string, error) {
	dsn := os.Getenv(envDSN)
	if dsn == "" {
		return "", fmt.Errorf("%s is not set", envDSN)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", fmt.Errorf("%s is unreachable: %w", envDSN, err)
	}
	defer conn.Close(ctx)
	return dsn, conn.Ping(ctx)
})

// testDSN returns the DSN of the test database. It skips the test when the
// database is not configured or unreachable, but fails it under CI (when the
// CI environment variable is set), so that CI never passes without these tests.
func testDSN(tb testing.TB) string {
	tb.Helper()
	dsn, err := reachable()
	if err == nil {
		return dsn
	}
	const how = " (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)"
	if os.Getenv("CI") != "" {
		tb.Fatalf("CI is set, so the PostgreSQL tests must run: %v; set %s to a reachable database%s", err, envDSN, how)
	}
	tb.Skipf("skipping PostgreSQL tests: %v; set %s to a database to run them%s", err, envDSN, how)
	return ""
}

// newSchema returns the name of a schema no other test uses, and drops it
// with everything in it when tb ends.
func newSchema(tb testing.TB, dsn string) string {
	tb.Helper()
	schema := "eventagg_test_" + strings.ToLower(rand.Text()[:16])
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// MustOpen opens a Store on schema and closes it when tb ends.
func MustOpen(tb testing.TB, dsn, schema string) *postgres.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), dsn, &postgres.Options{Schema: schema, MaxConns: 4})
	if err != nil {
		tb.Fatalf("Open(schema %q) error: %v", schema, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close() error: %v", err)
		}
	})
	return s
}

// exec runs sql on the test database, outside any Store.
func exec(tb testing.TB, dsn, sql string, args ...any) {
	tb.Helper()
	// Not tb.Context(): exec also runs in cleanups, after it is cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

func TestConformance(t *testing.T) {
	dsn := testDSN(t)
	storetest.Run(t, storetest.Harness{
		Open: func(tb testing.TB) eventagg.Store { return MustOpen(tb, dsn, newSchema(tb, dsn)) },
		Reopen: func(tb testing.TB, s eventagg.Store) eventagg.Store {
			tb.Helper()
			schema := s.(*postgres.Store).Schema()
			if err := s.Close(); err != nil {
				tb.Fatalf("Close() before reopen: %v", err)
			}
			return MustOpen(tb, dsn, schema)
		},
	})
}

func TestOpenConcurrently(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	const replicas = 6
	stores := make([]*postgres.Store, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() {
			stores[i], errs[i] = postgres.Open(t.Context(), dsn, &postgres.Options{Schema: schema, MaxConns: 2})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open #%d error: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	for i, s := range stores {
		if err := s.Ping(t.Context()); err != nil {
			t.Errorf("Ping #%d error: %v", i, err)
		}
		want := eventagg.Duplicate
		if i == 0 {
			want = eventagg.Stored
		}
		outcomes, err := s.Append(t.Context(), []eventagg.Event{event("t", "x")}, eventagg.AppendOptions{})
		if err != nil {
			t.Fatalf("Append #%d error: %v", i, err)
		}
		if diff := cmp.Diff([]eventagg.Status{want}, statuses(outcomes)); diff != "" {
			t.Errorf("Append #%d mismatch (-want +got):\n%s", i, diff)
		}
	}
}

func TestOpenNewerSchemaFails(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	s := MustOpen(t, dsn, schema)
	exec(t, dsn, `UPDATE `+pgx.Identifier{schema}.Sanitize()+`.eventagg_schema SET version = 99`)
	if err := s.Ping(t.Context()); err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Errorf("Ping() after upgrade by a newer eventagg = %v, want an error naming version 99", err)
	}
	_, err := postgres.Open(t.Context(), dsn, &postgres.Options{Schema: schema})
	if err == nil || !strings.Contains(err.Error(), "schema version 99 is newer") {
		t.Errorf("Open(newer schema) error = %v, want one saying version 99 is newer", err)
	}
}

func TestOpenForeignSchemaFails(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	exec(t, dsn, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize())
	exec(t, dsn, `CREATE TABLE `+pgx.Identifier{schema, "events"}.Sanitize()+` (id int)`)
	_, err := postgres.Open(t.Context(), dsn, &postgres.Options{Schema: schema})
	if err == nil || !strings.Contains(err.Error(), "not an eventagg schema") {
		t.Errorf("Open(schema with a foreign events table) error = %v, want \"not an eventagg schema\"", err)
	}
}

func TestOpenOtherTablesAllowed(t *testing.T) {
	// A schema may hold tables of its own beside eventagg's, and a name that
	// needs quoting works.
	dsn := testDSN(t)
	schema := newSchema(t, dsn) + `-Q'"x`
	t.Cleanup(func() { exec(t, dsn, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`) })
	exec(t, dsn, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize())
	exec(t, dsn, `CREATE TABLE `+pgx.Identifier{schema, "mine"}.Sanitize()+` (id int)`)
	s := MustOpen(t, dsn, schema)
	outcomes, err := s.Append(t.Context(), []eventagg.Event{event("t", "1"), event("t", "1")}, eventagg.AppendOptions{})
	if err != nil {
		t.Fatalf("Append error: %v", err)
	}
	if diff := cmp.Diff([]eventagg.Status{eventagg.Stored, eventagg.Duplicate}, statuses(outcomes)); diff != "" {
		t.Errorf("Append mismatch (-want +got):\n%s", diff)
	}
}

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// Port 1 on the loopback address refuses connections at once.
	_, err := postgres.Open(ctx, "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=5", nil)
	if err == nil {
		t.Fatal("Open(unreachable) succeeded")
	}
}

func TestOpenBadOptions(t *testing.T) {
	for _, opts := range []*postgres.Options{
		{Schema: strings.Repeat("s", 64)},
		{MaxConns: -1},
	} {
		if _, err := postgres.Open(t.Context(), "postgres://127.0.0.1:1/x", opts); err == nil {
			t.Errorf("Open(%+v) succeeded, want an error", opts)
		}
	}
	if _, err := postgres.Open(t.Context(), "postgres://%zz", nil); err == nil {
		t.Error("Open(malformed DSN) succeeded, want an error")
	}
}

func TestAppendErrorStoresNothing(t *testing.T) {
	dsn := testDSN(t)
	s := MustOpen(t, dsn, newSchema(t, dsn))
	ctx := t.Context()
	if _, err := s.Append(ctx, []eventagg.Event{event("t", "1")}, eventagg.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// PostgreSQL text cannot hold NUL: the insert fails after the lock was
	// taken and the sequence numbers reserved. Append does not validate, so
	// the batch reaches the database.
	bad := []eventagg.Event{event("t", "2"), event("u", "3"), event("t", "1")}
	bad[1].Source = "nul\x00"
	if outcomes, err := s.Append(ctx, bad, eventagg.AppendOptions{}); err == nil {
		t.Fatalf("Append(source with NUL) = %v, nil; want an error", outcomes)
	}
	after, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("Stats() moved after a failed Append (-want +got):\n%s", diff)
	}
	if got := listAll(t, s, eventagg.Query{}); len(got) != 1 {
		t.Errorf("Events() = %d events after a failed Append, want 1", len(got))
	}
	// The store still works, and the numbers burnt by the failure leave a gap
	// that listing does not mind.
	outcomes, err := s.Append(ctx, bad[:1], eventagg.AppendOptions{})
	if err != nil {
		t.Fatalf("Append after failure error: %v", err)
	}
	if diff := cmp.Diff([]eventagg.Status{eventagg.Stored}, statuses(outcomes)); diff != "" {
		t.Errorf("Append after failure mismatch (-want +got):\n%s", diff)
	}
	if got := listAll(t, s, eventagg.Query{}); len(got) != 2 {
		t.Errorf("Events() = %d events, want 2", len(got))
	}
}

func TestPing(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	s := MustOpen(t, dsn, schema)
	var p eventagg.Pinger = s
	if err := p.Ping(t.Context()); err != nil {
		t.Errorf("Ping() error: %v", err)
	}
	exec(t, dsn, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
	if err := p.Ping(t.Context()); err == nil {
		t.Error("Ping() after the schema was dropped = nil, want an error")
	}
	s.Close()
	if err := p.Ping(t.Context()); !errors.Is(err, eventagg.ErrClosed) {
		t.Errorf("Ping() after Close = %v, want ErrClosed", err)
	}
}

// TestLaterCopies covers the copies of a key within one call, after a first
// copy that is new, a duplicate or a conflict, and the digest stored with
// each event.
func TestLaterCopies(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	s := MustOpen(t, dsn, schema)
	a := withPayload(event("t", "a"), `{"v":1}`)
	none := withPayload(event("t", "none"), "")
	if diff := cmp.Diff([]eventagg.Status{S, S, D}, appendStatuses(t, s, a, none, none)); diff != "" {
		t.Errorf("first Append (-want +got):\n%s", diff)
	}
	if h := phash(t, dsn, schema, none.Key()); !bytes.Equal(h, driver.PayloadHash(nil)) {
		t.Errorf("phash of an event without payload = %x, want the digest of the empty payload", h)
	}
	v := func(e eventagg.Event, p string) eventagg.Event { return withPayload(e, p) }
	k := event("t", "k")
	for _, tt := range []struct {
		name  string
		batch []eventagg.Event
		want  []eventagg.Status
	}{
		{"after a duplicate", []eventagg.Event{a, v(a, `{"v":2}`), a}, []eventagg.Status{D, C, D}},
		{"after a conflict", []eventagg.Event{v(a, `{"v":2}`), a, v(a, `{"v":2}`), v(a, `{"v":3}`), v(a, "")}, []eventagg.Status{C, D, C, C, C}},
		{"after a new key", []eventagg.Event{v(k, `1`), v(k, `2`), v(k, `1`), v(k, "")}, []eventagg.Status{S, C, D, C}},
		{"without payload", []eventagg.Event{v(none, `null`), none, v(none, `""`)}, []eventagg.Status{C, D, C}},
	} {
		if diff := cmp.Diff(tt.want, appendStatuses(t, s, tt.batch...)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
	reject := eventagg.AppendOptions{RejectConflicts: true}
	for _, tt := range []struct {
		batch []eventagg.Event
		index int
	}{
		{[]eventagg.Event{a, event("t", "x"), v(a, `{"v":2}`)}, 2},
		{[]eventagg.Event{event("t", "y"), v(a, `{"v":2}`), a}, 1},
	} {
		outcomes, err := s.Append(t.Context(), tt.batch, reject)
		var ce *eventagg.ConflictError
		if !errors.As(err, &ce) || ce.Index != tt.index {
			t.Errorf("Append(%d events, rejecting) = %v, %v; want a ConflictError for event %d", len(tt.batch), outcomes, err, tt.index)
		}
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := eventagg.Counts{Received: 3 + 3 + 5 + 4 + 3, UniqueProcessed: 3, DuplicateDropped: 1 + 2 + 1 + 1 + 1, Conflicts: 1 + 4 + 2 + 2, Stored: 3}
	want.DuplicateDropped += want.Conflicts
	if diff := cmp.Diff(want, st.Counts); diff != "" {
		t.Errorf("Stats() (-want +got):\n%s", diff)
	}
}

// event returns a valid event whose timestamp has nanoseconds.
func event(topic, id string) eventagg.Event {
	return eventagg.Event{
		Topic:     topic,
		EventID:   id,
		Timestamp: time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC),
		Payload:   json.RawMessage(`{"id":"` + id + `"}`),
	}
}

// statuses returns the statuses of outcomes.
func statuses(outcomes []eventagg.Outcome) []eventagg.Status {
	out := make([]eventagg.Status, len(outcomes))
	for i, o := range outcomes {
		out[i] = o.Status
	}
	return out
}

// listAll lists the events q selects and fails tb on error.
func listAll(tb testing.TB, s eventagg.Store, q eventagg.Query) []eventagg.Event {
	tb.Helper()
	var out []eventagg.Event
	for e, err := range s.Events(tb.Context(), q) {
		if err != nil {
			tb.Fatalf("Events(%+v) error: %v", q, err)
		}
		out = append(out, e)
	}
	return out
}

// withPayload returns e with payload p (none if p is empty).
func withPayload(e eventagg.Event, p string) eventagg.Event {
	e.Payload = nil
	if p != "" {
		e.Payload = json.RawMessage(p)
	}
	return e
}

// appendStatuses appends events and returns their statuses.
func appendStatuses(t *testing.T, s eventagg.Store, events ...eventagg.Event) []eventagg.Status {
	t.Helper()
	outcomes, err := s.Append(t.Context(), events, eventagg.AppendOptions{})
	if err != nil {
		t.Fatalf("Append error: %v", err)
	}
	return statuses(outcomes)
}

// Statuses, short for the tables of the tests.
const (
	S = eventagg.Stored
	D = eventagg.Duplicate
	C = eventagg.Conflict
)

// phash returns the digest stored with an event, nil for none.
func phash(t *testing.T, dsn, schema string, k eventagg.Key) []byte {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var h []byte
	err = conn.QueryRow(t.Context(), `SELECT phash FROM `+pgx.Identifier{schema}.Sanitize()+`.events
		WHERE topic = $1 AND event_id = $2`, k.Topic, k.EventID).Scan(&h)
	if err != nil {
		t.Fatalf("phash of %v: %v", k, err)
	}
	return h
}
