package postgres

import (
	"context"
	"crypto/rand"
	"os"
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
	dsn := os.Getenv("EVENTAGG_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("EVENTAGG_TEST_POSTGRES is not set")
	}
	schema := "eventagg_test_" + strings.ToLower(rand.Text()[:16])
	s, err := Open(t.Context(), dsn, &Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
			conn.Close(ctx)
		}
	})
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
	dsn := os.Getenv("EVENTAGG_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("EVENTAGG_TEST_POSTGRES is not set")
	}
	schema := "eventagg_test_" + strings.ToLower(rand.Text()[:16])
	s, err := Open(t.Context(), dsn, &Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
			conn.Close(ctx)
		}
	})
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
