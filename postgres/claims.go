package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/jackc/pgx/v5"
)

// Claims (schema version 4) live in the table claims, one row per key
// claimed and not yet completed or released, live or lapsed, with its
// fencing token, drawn from the sequence claims_seq, and the end of its
// lease in nanoseconds. A claim that takes over a lapsed one adds to the
// row's taken_over; the deletion of the row by Complete or Release adds
// taken_over to the one row of claim_state, so that the claims taken over
// are counted without a row that every Claim writes. No claim statement
// takes the append lock but a Complete's, shared, as an Append's: claims
// of different keys never wait for each other, and those of one key wait
// only for each other's row lock. The package documentation says more,
// under Claims.

// prepareClaims sets the statements of the claims.
func (s *Store) prepareClaims() {
	tokens := quoteLiteral(s.quoted + ".claims_seq")
	// claimSQL claims key ($1, $2) until $4 at $3, all in nanoseconds, but
	// for a key stored (in the statement's snapshot). It inserts the claim
	// with a new token, or, if a claim of the key exists whose lease ended
	// at $3 or before, takes it over; a live claim is left as it is, but
	// locked (ON CONFLICT DO UPDATE locks the row it does not update) for
	// the rest of the transaction, so that claimCheckSQL finds it. The
	// insert waits for a transaction holding the key's row (another Claim,
	// or a Complete or Release deleting it), then judges the row as that
	// transaction left it. It returns whether the key is stored, and the
	// new token, NULL unless the key was claimed. A token is drawn for a
	// live claim too, and burnt.
	s.claimSQL = s.expand(`WITH d AS MATERIALIZED (
	SELECT EXISTS (SELECT FROM {schema}.events WHERE topic = $1::text AND event_id = $2::text) AS done
), ins AS (
	INSERT INTO {schema}.claims AS c (topic, event_id, token, expires)
	SELECT $1::text, $2::text, nextval(` + tokens + `), $4::int8 FROM d WHERE NOT d.done
	ON CONFLICT (topic, event_id) DO UPDATE
	SET token = excluded.token, expires = excluded.expires, taken_over = c.taken_over + 1
	WHERE c.expires <= $3::int8
	RETURNING c.token
)
SELECT d.done, (SELECT token FROM ins) FROM d`)
	// claimCheckSQL runs after claimSQL in its transaction, with a snapshot
	// taken once claimSQL's row is held: whether the key is stored, and the
	// end of the lease of its claim. A Complete of the key that committed
	// while claimSQL waited for its row is stored in this snapshot, though
	// not in claimSQL's, and makes the Claim Done.
	s.claimCheckSQL = s.expand(`SELECT
	EXISTS (SELECT FROM {schema}.events WHERE topic = $1::text AND event_id = $2::text),
	(SELECT expires FROM {schema}.claims WHERE topic = $1::text AND event_id = $2::text)`)
	// endClaimSQL deletes the claim of key ($1, $2) if it has token $3,
	// and adds the claims of the key taken over to claim_state. It returns
	// the number of claims deleted, 0 or 1. The delete waits for a
	// transaction holding the row (a Claim taking it over), then judges the
	// row as that transaction left it: a claim taken over has another
	// token.
	s.endClaimSQL = s.expand(`WITH d AS (
	DELETE FROM {schema}.claims WHERE topic = $1::text AND event_id = $2::text AND token = $3::int8
	RETURNING taken_over
), x AS (
	UPDATE {schema}.claim_state SET expired = expired + d.taken_over FROM d WHERE d.taken_over > 0
)
SELECT count(*) FROM d`)
	s.claimCountsSQL = s.expand(`SELECT count(*) FILTER (WHERE expires > $1::int8),
	count(*) FILTER (WHERE expires <= $1::int8) + coalesce(sum(taken_over), 0)::int8 + (SELECT expired FROM {schema}.claim_state)
FROM {schema}.claims`)
}

// Claim implements [eventagg.Claimer] in one transaction of three round
// trips (BEGIN, two pipelined statements, COMMIT or ROLLBACK): it returns
// Done if the key is stored (an event or a kept key of the events table),
// Busy with the holder's lease end if a claim of the key lasts past now,
// and otherwise claims the key until now+lease with a token drawn from
// claims_seq, taking over a lapsed claim, which counts as expired.
// Concurrent Claims of one key, from any replica, claim it once: the others
// wait for the claimant's row and find it Busy, or Done once it completed.
func (s *Store) Claim(ctx context.Context, key eventagg.Key, lease time.Duration, now time.Time) (eventagg.Claim, error) {
	if err := ctx.Err(); err != nil {
		return eventagg.Claim{}, err
	}
	if s.closed.Load() {
		return eventagg.Claim{}, eventagg.ErrClosed
	}
	expires := now.Add(lease)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return eventagg.Claim{}, s.fail(ctx, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // no-op after Commit
	var (
		q             pgx.Batch
		done, stored  bool
		token, holder *int64
	)
	q.Queue(s.claimSQL, key.Topic, key.EventID, nanos(now), nanos(expires)).QueryRow(func(row pgx.Row) error {
		return row.Scan(&done, &token)
	})
	q.Queue(s.claimCheckSQL, key.Topic, key.EventID).QueryRow(func(row pgx.Row) error {
		return row.Scan(&stored, &holder)
	})
	if err := tx.SendBatch(ctx, &q).Close(); err != nil {
		return eventagg.Claim{}, s.fail(ctx, err)
	}
	switch {
	case done || stored:
		// Rolled back: a claim made in the meantime is undone.
		return eventagg.Claim{Key: key, Status: eventagg.Done}, nil
	case token != nil:
		if err := tx.Commit(ctx); err != nil {
			return eventagg.Claim{}, s.fail(ctx, err)
		}
		return eventagg.Claim{Key: key, Status: eventagg.Claimed, Expires: expires, Token: *token}, nil
	case holder != nil:
		return eventagg.Claim{Key: key, Status: eventagg.Busy, Expires: time.Unix(0, *holder).UTC()}, nil
	}
	// claimSQL locked the row it did not take over.
	return eventagg.Claim{}, errors.New("postgres: the claim of a busy key vanished while locked")
}

// Complete implements [eventagg.Claimer]: in one transaction, it deletes
// c's claim if it still has c's token, and stores event as [Store.Append]
// does on its two-statement path, in one pipelined round trip after BEGIN;
// then it commits, and notifies as Append does, in a second round trip,
// and returns once PostgreSQL acknowledged the commit. If c's claim is
// gone or has another token, it rolls back and returns
// [eventagg.ErrClaimLost]. With opts.RejectConflicts, a
// conflict rolls back too, leaving c held, and Complete returns a
// [*eventagg.ConflictError].
//
// As with Append, if the connection fails or ctx ends while the commit is
// in flight, Complete returns an error although the event may have been
// stored and the claim ended.
func (s *Store) Complete(ctx context.Context, c eventagg.Claim, event eventagg.Event, opts eventagg.AppendOptions) (eventagg.Outcome, error) {
	if err := ctx.Err(); err != nil {
		return eventagg.Outcome{}, err
	}
	if s.closed.Load() {
		return eventagg.Outcome{}, eventagg.ErrClosed
	}
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return eventagg.Outcome{}, s.fail(ctx, err)
	}
	defer conn.Release()
	var (
		q        pgx.Batch
		ended    int64
		events   = []eventagg.Event{event}
		outcomes = make([]eventagg.Outcome, 1)
		b        = newAppendBatch(events)
	)
	// The claim first, so that its row is held before the event's key.
	// Pipelined with the append, which runs in vain (and is rolled back)
	// when the claim was lost: that is rare, and waiting for the claim's
	// answer first would cost every Complete a round trip.
	q.Queue("BEGIN")
	q.Queue(s.endClaimSQL, c.Key.Topic, c.Key.EventID, c.Token).QueryRow(func(row pgx.Row) error {
		return row.Scan(&ended)
	})
	lost := func() error {
		if ended == 0 {
			return eventagg.ErrClaimLost
		}
		return nil
	}
	if err := s.storeSlow(ctx, conn, &q, b, events, opts, outcomes, lost); err != nil {
		return eventagg.Outcome{}, err
	}
	return outcomes[0], nil
}

// Release implements [eventagg.Claimer] in one statement: it deletes c's
// claim if it still has c's token, and returns [eventagg.ErrClaimLost] if
// not.
func (s *Store) Release(ctx context.Context, c eventagg.Claim) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return eventagg.ErrClosed
	}
	var ended int64
	if err := s.pool.QueryRow(ctx, s.endClaimSQL, c.Key.Topic, c.Key.EventID, c.Token).Scan(&ended); err != nil {
		return s.fail(ctx, err)
	}
	if ended == 0 {
		return eventagg.ErrClaimLost
	}
	return nil
}

// ClaimCounts implements [eventagg.Claimer] in one query, which reads every
// claim held or lapsed: Active counts those whose lease ends after now;
// Expired those whose lease ended at now or before, and those taken over
// after their lease ran out.
func (s *Store) ClaimCounts(ctx context.Context, now time.Time) (eventagg.ClaimCounts, error) {
	if err := ctx.Err(); err != nil {
		return eventagg.ClaimCounts{}, err
	}
	if s.closed.Load() {
		return eventagg.ClaimCounts{}, eventagg.ErrClosed
	}
	var cc eventagg.ClaimCounts
	if err := s.pool.QueryRow(ctx, s.claimCountsSQL, nanos(now)).Scan(&cc.Active, &cc.Expired); err != nil {
		return eventagg.ClaimCounts{}, s.fail(ctx, err)
	}
	return cc, nil
}
