package main

import (
	"context"
	"crypto/rand"
	"iter"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

// postgresSchema returns the test database's DSN and a schema of its own,
// dropped when t ends. Without EVENTAGG_TEST_POSTGRES it skips, unless CI is set.
func postgresSchema(t *testing.T) (dsn, schema string) {
	t.Helper()
	dsn = os.Getenv("EVENTAGG_TEST_POSTGRES")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set, so the PostgreSQL tests must run: set EVENTAGG_TEST_POSTGRES")
		}
		t.Skip("set EVENTAGG_TEST_POSTGRES to a PostgreSQL DSN to run")
	}
	schema = "eventagg_cmd_" + strings.ToLower(rand.Text()[:12])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return dsn, schema
}

func TestTwoReplicasOnPostgresAgree(t *testing.T) {
	dsn, schema := postgresSchema(t)
	replicas := []*child{
		startChild(t, dsn, "-db-schema", schema),
		startChild(t, dsn, "-db-schema", schema),
	}
	const producers, rounds = 8, 10
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		processed  int
		duplicates int
	)
	for p := range producers {
		wg.Go(func() {
			client := newClient(t, replicas[p%2].url)
			for r := range rounds {
				// Every producer sends the shared ids 0..9 of its round, and one of its own.
				batch := []eventagg.Event{{Topic: "shared", EventID: strconv.Itoa(r)}, {Topic: "own", EventID: strconv.Itoa(p*rounds + r)}}
				res, err := client.Publish(context.Background(), batch...)
				if err != nil {
					t.Errorf("producer %d: %v", p, err)
					return
				}
				mu.Lock()
				processed += res.Processed
				duplicates += res.Duplicates
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	want := eventagg.Counts{
		Received:         producers * rounds * 2,
		UniqueProcessed:  rounds + producers*rounds,
		DuplicateDropped: (producers - 1) * rounds,
		Stored:           rounds + producers*rounds,
	}
	if processed != int(want.UniqueProcessed) || duplicates != int(want.DuplicateDropped) {
		t.Errorf("the answers sum to %d processed, %d duplicates; want %d, %d", processed, duplicates, want.UniqueProcessed, want.DuplicateDropped)
	}
	var stats []httpapi.StatsResponse
	for _, r := range replicas {
		st, err := newClient(t, r.url).Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, st.Counts); diff != "" {
			t.Errorf("replica %s counters mismatch (-want +got):\n%s", r.url, diff)
		}
		stats = append(stats, st)
	}
	if diff := cmp.Diff(stats[0].Topics, stats[1].Topics); diff != "" {
		t.Errorf("the replicas disagree per topic (-first +second):\n%s", diff)
	}
	n := 0
	for _, err := range newClient(t, replicas[1].url).Events(t.Context(), eventagg.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != int(want.UniqueProcessed) {
		t.Errorf("%d events listed, want %d", n, want.UniqueProcessed)
	}
}

func TestRedactHidesPasswords(t *testing.T) {
	for in, want := range map[string]string{
		"events.db": "events.db",
		"postgres://u:secret@db:5432/events?sslmode=require": "postgres://u:xxxxx@db:5432/events?sslmode=require",
		"postgresql://u@db/events":                           "postgresql://u@db/events",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFollowAcrossPostgresReplicas: a consumer following one replica sees
// the events published on another, in order, once each, through the Go
// client's Follow.
func TestFollowAcrossPostgresReplicas(t *testing.T) {
	dsn, schema := postgresSchema(t)
	a := startChild(t, dsn, "-db-schema", schema)
	b := startChild(t, dsn, "-db-schema", schema)
	pubA, pubB := newClient(t, a.url), newClient(t, b.url)
	if _, err := pubA.Publish(t.Context(), eventagg.Event{Topic: "t", EventID: "0"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	next, stop := iter.Pull2(newClient(t, b.url).Follow(ctx, eventagg.Query{Topic: "t"}))
	defer stop()
	// The first event tells that the follow is under way; the others are
	// published on both replicas after it, with resends.
	for i := 0; i <= 20; i++ {
		e, err, ok := next()
		if !ok || err != nil {
			t.Fatalf("Follow on replica b ended after %d events: %v", i, err)
		}
		if e.EventID != strconv.Itoa(i) {
			t.Fatalf("event %d from replica b's follow: %s", i, e.EventID)
		}
		if i == 20 {
			break
		}
		pub := []*httpapi.Client{pubA, pubB}[i%2]
		ev := eventagg.Event{Topic: "t", EventID: strconv.Itoa(i + 1)}
		if _, err := pub.Publish(t.Context(), ev, ev); err != nil {
			t.Fatal(err)
		}
	}
}
