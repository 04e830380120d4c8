package eventagg

import (
	"context"
	"errors"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// Claims live in the table claims, one row per key claimed and not yet
// completed or released, with its fencing token and the end of its lease
// in nanoseconds; claim_state holds the last token handed out and the count
// of claims taken over after their lease ran out. Claims and releases are
// transactions of the writer that need not be durable: a claim lost to a
// crash is one that lapsed, and the work is claimed again. A completion
// stores its event and deletes its claim in one transaction, durable before
// Complete returns, as an Append is.

// Claim implements [Claimer].
func (s *SQLiteStore) Claim(ctx context.Context, key Key, lease time.Duration, now time.Time) (Claim, error) {
	var cl Claim
	err := s.writeTx(ctx, func() error {
		var err error
		cl, err = s.claimTx(key, lease, now)
		return err
	}, func() {})
	return cl, err
}

func (s *SQLiteStore) claimTx(key Key, lease time.Duration, now time.Time) (Claim, error) {
	done, err := s.queryExists(`SELECT 1 FROM events JOIN topics ON topics.id = events.topic_id WHERE topics.name = ? AND events.event_id = ?`, key.Topic, key.EventID)
	if err != nil || done {
		return Claim{Key: key, Status: Done}, err
	}
	_, expires, held, err := s.claimRow(key)
	if err != nil {
		return Claim{}, err
	}
	if held {
		if expires > now.UnixNano() {
			return Claim{Key: key, Status: Busy, Expires: time.Unix(0, expires).UTC()}, nil
		}
		if err := s.w.Exec(`UPDATE claim_state SET expired = expired + 1`); err != nil {
			return Claim{}, err
		}
	}
	stmt, _, err := s.w.Prepare(`UPDATE claim_state SET last_token = last_token + 1 RETURNING last_token`)
	if err != nil {
		return Claim{}, err
	}
	defer stmt.Close()
	if !stmt.Step() {
		return Claim{}, errors.Join(errors.New("eventagg: claim_state has no row"), stmt.Err())
	}
	cl := Claim{Key: key, Status: Claimed, Token: stmt.ColumnInt64(0), Expires: now.Add(lease)}
	if err := finish(stmt); err != nil {
		return Claim{}, err
	}
	return cl, s.exec(`INSERT OR REPLACE INTO claims (topic, event_id, token, expires) VALUES (?, ?, ?, ?)`,
		key.Topic, key.EventID, cl.Token, cl.Expires.UnixNano())
}

// claimRow reads the claim of key, if there is one.
func (s *SQLiteStore) claimRow(key Key) (token, expires int64, ok bool, err error) {
	stmt, _, err := s.w.Prepare(`SELECT token, expires FROM claims WHERE topic = ? AND event_id = ?`)
	if err != nil {
		return 0, 0, false, err
	}
	defer stmt.Close()
	if err := errors.Join(stmt.BindText(1, key.Topic), stmt.BindText(2, key.EventID)); err != nil {
		return 0, 0, false, err
	}
	if stmt.Step() {
		token, expires, ok = stmt.ColumnInt64(0), stmt.ColumnInt64(1), true
	}
	return token, expires, ok, finish(stmt)
}

// endClaim deletes c's row if c still holds its key, and returns
// ErrClaimLost if not.
func (s *SQLiteStore) endClaim(c Claim) error {
	token, _, ok, err := s.claimRow(c.Key)
	switch {
	case err != nil:
		return err
	case !ok || token != c.Token:
		return ErrClaimLost
	}
	return s.exec(`DELETE FROM claims WHERE topic = ? AND event_id = ?`, c.Key.Topic, c.Key.EventID)
}

// Complete implements [Claimer].
func (s *SQLiteStore) Complete(ctx context.Context, c Claim, event Event, opts AppendOptions) (Outcome, error) {
	outcomes, wait, err := s.appendAsync(ctx, []Event{event}, opts, func() error { return s.endClaim(c) })
	if err != nil {
		return Outcome{}, err
	}
	if err := wait(); err != nil {
		return Outcome{}, err
	}
	return outcomes[0], nil
}

// Release implements [Claimer].
func (s *SQLiteStore) Release(ctx context.Context, c Claim) error {
	return s.writeTx(ctx, func() error { return s.endClaim(c) }, func() {})
}

// ClaimCounts implements [Claimer].
func (s *SQLiteStore) ClaimCounts(ctx context.Context, now time.Time) (ClaimCounts, error) {
	var cc ClaimCounts
	err := s.read(ctx, func(r *sqliteReader) error {
		stmt, _, err := r.conn.Prepare(`SELECT
	(SELECT count(*) FROM claims WHERE expires > ?1),
	(SELECT count(*) FROM claims WHERE expires <= ?1) + (SELECT expired FROM claim_state)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		if err := stmt.BindInt64(1, now.UnixNano()); err != nil {
			return err
		}
		if stmt.Step() {
			cc.Active, cc.Expired = stmt.ColumnInt64(0), stmt.ColumnInt64(1)
		}
		return finish(stmt)
	})
	return cc, err
}

// queryExists reports whether the query, with args bound in order, returns
// a row, on the writer.
func (s *SQLiteStore) queryExists(sql string, args ...any) (bool, error) {
	stmt, _, err := s.w.Prepare(sql)
	if err != nil {
		return false, err
	}
	defer stmt.Close()
	if err := bindAll(stmt, args); err != nil {
		return false, err
	}
	found := stmt.Step()
	return found, finish(stmt)
}

// exec runs sql with args bound in order on the writer.
func (s *SQLiteStore) exec(sql string, args ...any) error {
	stmt, _, err := s.w.Prepare(sql)
	if err != nil {
		return err
	}
	defer stmt.Close()
	if err := bindAll(stmt, args); err != nil {
		return err
	}
	return stmt.Exec()
}

func bindAll(stmt *sqlite3.Stmt, args []any) error {
	for i, a := range args {
		var err error
		switch v := a.(type) {
		case string:
			err = stmt.BindText(i+1, v)
		case int64:
			err = stmt.BindInt64(i+1, v)
		default:
			err = errors.New("eventagg: unsupported argument type")
		}
		if err != nil {
			return err
		}
	}
	return nil
}
