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

// claimStatements are the writer's statements for claims.
func (s *SQLiteStore) claimStatements() []struct {
	stmt **sqlite3.Stmt
	sql  string
} {
	return []struct {
		stmt **sqlite3.Stmt
		sql  string
	}{
		{&s.claimDone, `SELECT 1 FROM events JOIN topics ON topics.id = events.topic_id WHERE topics.name = ?1 AND events.event_id = ?2`},
		{&s.claimGet, `SELECT token, expires FROM claims WHERE topic = ?1 AND event_id = ?2`},
		{&s.claimToken, `UPDATE claim_state SET last_token = last_token + 1 RETURNING last_token`},
		{&s.claimPut, `INSERT OR REPLACE INTO claims (topic, event_id, token, expires) VALUES (?1, ?2, ?3, ?4)`},
		{&s.claimDel, `DELETE FROM claims WHERE topic = ?1 AND event_id = ?2`},
		{&s.claimLapsed, `UPDATE claim_state SET expired = expired + 1`},
	}
}

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
	done, err := s.keyRow(s.claimDone, key)
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
		if err := s.claimLapsed.Exec(); err != nil {
			return Claim{}, err
		}
	}
	stmt := s.claimToken
	if !stmt.Step() {
		return Claim{}, errors.Join(errors.New("eventagg: claim_state has no row"), stmt.Reset())
	}
	cl := Claim{Key: key, Status: Claimed, Token: stmt.ColumnInt64(0), Expires: now.Add(lease)}
	if err := finish(stmt); err != nil {
		return Claim{}, err
	}
	put := s.claimPut
	if err := errors.Join(put.BindText(1, key.Topic), put.BindText(2, key.EventID),
		put.BindInt64(3, cl.Token), put.BindInt64(4, cl.Expires.UnixNano())); err != nil {
		return Claim{}, err
	}
	return cl, put.Exec()
}

// keyRow reports whether stmt, with key bound as ?1 and ?2, returns a row.
func (s *SQLiteStore) keyRow(stmt *sqlite3.Stmt, key Key) (bool, error) {
	if err := errors.Join(stmt.BindText(1, key.Topic), stmt.BindText(2, key.EventID)); err != nil {
		return false, err
	}
	found := stmt.Step()
	return found, finish(stmt)
}

// claimRow reads the claim of key, if there is one.
func (s *SQLiteStore) claimRow(key Key) (token, expires int64, ok bool, err error) {
	stmt := s.claimGet
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
	del := s.claimDel
	if err := errors.Join(del.BindText(1, c.Key.Topic), del.BindText(2, c.Key.EventID)); err != nil {
		return err
	}
	return del.Exec()
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
		stmt := r.claims
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
