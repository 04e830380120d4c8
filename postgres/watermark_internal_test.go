package postgres

import (
	"context"
	"crypto/rand"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/jackc/pgx/v5"
)

// TestListingRetryOnAnotherConnection runs the listing statement as a
// held-back page's retry does: with its sample passed as parameters, on
// connections that never ran the sample's statements, often enough for
// PostgreSQL to switch to the statement's generic plan, whose estimates
// once read the sample's settings, unset there, and failed.
func TestListingRetryOnAnotherConnection(t *testing.T) {
	s, _ := openInternal(t, nil)
	smp := &sample{seq: 5, holders: []int64{1, 2}, lsn: "0/0"}
	for i := range 12 {
		for _, sql := range []string{s.listSQL, s.listTopicSQL} {
			args := append(s.watermarkArgs(smp, new(finding)), int64(0), 10)
			if sql == s.listTopicSQL {
				args = append(args, "t")
			}
			rows, err := s.pool.Query(t.Context(), sql, args...)
			if err == nil {
				for rows.Next() {
				}
				err = rows.Err()
			}
			if err != nil {
				t.Fatalf("execution %d: %v", i, err)
			}
		}
	}
}

// TestListingWaitsForAHolderWithoutAnID holds the append lock as a replica
// of an earlier version does, exclusive and before its transaction has an
// ID: a listing cannot tell when such a holder ends, so it does not take
// its sample for safe; once the holder is gone, the listing shows all.
func TestListingWaitsForAHolderWithoutAnID(t *testing.T) {
	s, dsn := openInternal(t, nil)
	if _, err := s.Append(t.Context(), []eventagg.Event{{Topic: "t", EventID: "0"}}, eventagg.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var hasID bool
	if err := tx.QueryRow(t.Context(), `SELECT pg_advisory_xact_lock($1) IS NULL AND pg_current_xact_id_if_assigned() IS NOT NULL`, s.lockKey).Scan(&hasID); err != nil {
		t.Fatal(err)
	}
	if hasID {
		t.Fatal("the holder has a transaction ID: the test needs one without")
	}
	var got []eventagg.Event
	for e, err := range s.Events(t.Context(), eventagg.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if len(got) != 0 || s.heldBack.Load() == 0 {
		t.Errorf("while a holder without an ID holds the lock: %d events listed, held back %v; want none, held back", len(got), s.heldBack.Load() != 0)
	}
	tx.Rollback(context.Background())
	got = got[:0]
	for e, err := range s.Events(t.Context(), eventagg.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if len(got) != 1 || s.heldBack.Load() != 0 {
		t.Errorf("after the holder ended: %d events listed, held back %v; want 1, not held back", len(got), s.heldBack.Load() != 0)
	}
}

// openInternal opens a Store with opts (nil: the defaults) on a schema of
// its own in the database of EVENTAGG_TEST_POSTGRES, and closes it and
// drops the schema when t ends; it skips t without the variable. It
// returns the Store and the DSN.
func openInternal(t *testing.T, opts *Options) (*Store, string) {
	t.Helper()
	dsn := os.Getenv("EVENTAGG_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("EVENTAGG_TEST_POSTGRES is not set")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	o.Schema = "eventagg_test_" + strings.ToLower(rand.Text()[:16])
	s, err := Open(t.Context(), dsn, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{o.Schema}.Sanitize()+` CASCADE`)
			conn.Close(ctx)
		}
	})
	return s, dsn
}

// TestAppendsTakeAFreeCounterShard holds the advisory locks of every
// counter shard but one, as Appends in flight on them would: every Append
// then adds to the free one, whatever shard it drew, rather than wait for
// a held one's row.
func TestAppendsTakeAFreeCounterShard(t *testing.T) {
	const shards, free = 8, 5
	s, dsn := openInternal(t, &Options{CounterShards: shards})
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	shardKey := int32(uint32(s.lockKey))
	if _, err := tx.Exec(t.Context(), `SELECT pg_advisory_xact_lock($1, i) FROM generate_series(0, $2 - 1) i WHERE i <> $3`,
		shardKey, shards, free); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := s.Append(t.Context(), []eventagg.Event{{Topic: "t", EventID: strconv.Itoa(i)}}, eventagg.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var used []int32
	if err := s.pool.QueryRow(t.Context(), s.expand(`SELECT array_agg(shard ORDER BY shard) FROM {schema}.counters WHERE topic = 't'`)).Scan(&used); err != nil {
		t.Fatal(err)
	}
	if len(used) != 1 || used[0] != free {
		t.Errorf("counter shards of topic t = %v, want [%d], the one not held", used, free)
	}
}
