package postgres_test

import (
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
		isNew, err := s.Append(t.Context(), []eventagg.Event{event("t", "x")})
		if err != nil {
			t.Fatalf("Append #%d error: %v", i, err)
		}
		if diff := cmp.Diff([]bool{i == 0}, isNew); diff != "" {
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
	isNew, err := s.Append(t.Context(), []eventagg.Event{event("t", "1"), event("t", "1")})
	if err != nil {
		t.Fatalf("Append error: %v", err)
	}
	if diff := cmp.Diff([]bool{true, false}, isNew); diff != "" {
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
	if _, err := s.Append(ctx, []eventagg.Event{event("t", "1")}); err != nil {
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
	if isNew, err := s.Append(ctx, bad); err == nil {
		t.Fatalf("Append(source with NUL) = %v, nil; want an error", isNew)
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
	isNew, err := s.Append(ctx, bad[:1])
	if err != nil {
		t.Fatalf("Append after failure error: %v", err)
	}
	if diff := cmp.Diff([]bool{true}, isNew); diff != "" {
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

// event returns a valid event whose timestamp has nanoseconds.
func event(topic, id string) eventagg.Event {
	return eventagg.Event{
		Topic:     topic,
		EventID:   id,
		Timestamp: time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC),
		Payload:   json.RawMessage(`{"id":"` + id + `"}`),
	}
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
