package postgres

import (
	"context"
	"crypto/rand"
	"os"
	"strings"
	"testing"
	"time"

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
			args := append(append([]any{int64(0), 10, int64(0)}, smp.args()...), "0/0")
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
