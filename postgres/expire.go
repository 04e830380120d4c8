package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/jackc/pgx/v5"
)

// How retention is kept (schema version 3). Events leave in Seq order, so
// what has left is two prefixes of the events table, recorded in the one
// row of the retention table by the transactions that move them:
//
//   - payloads: every event with a Seq up to it has left: it is listed no
//     more and counted in counters.expired. Listings start after it.
//   - keys: every row with a Seq up to it is deleted. The rows between keys
//     and payloads are the kept keys of events that left (with a dedup
//     window): their payload is NULL, their source empty, and phash holds
//     the payload's digest, by which Append judges a later copy as it
//     judges any other.
//
// The package documentation says more, under Retention.

// expireShard is the counters row of each topic that Expire adds to. Appends
// add to the shards 0 to CounterShards-1, so that an Expire and an Append
// never wait for each other's counter row.
const expireShard = -1

// lockRetentionSQL locks the retention row for the rest of the transaction:
// it makes the Expires of every replica run one at a time, whether or not
// Appends take the append lock. Run as its own statement, before
// expireSQL, so that expireSQL's snapshot, taken at its start, holds what
// the Expire before it committed.
const lockRetentionSQL = `SELECT payloads, keys FROM {schema}.retention FOR UPDATE`

// expireSQL decides what leaves and removes it. Parameters: $1 the
// PayloadsBefore and $2 the KeysBefore of the call in nanoseconds ($2 at
// most $1), $3 its Limit; $4 the floor, $5 and $6 the Seq and holders
// sampled, $7 and $8 the position and watermark of the pending floor,
// which serves if the WAL is flushed past it (see watermark.go): it
// removes no event above the watermark, below which an Append in flight
// could still commit events.
//
// k reads the kept keys, oldest first, up to the limit; kk are those that
// leave: the ones before the first accepted at or after $2. k1 is the keys
// prefix after them: payloads once no kept key remains (all of k left and k
// was not cut short by the limit), and n their number.
//
// l reads the events that have not left, oldest first, up to the limit;
// due are those that leave: the ones before the first accepted at or after
// $1. dl are those of them whose keys leave with them: the ones before the
// first accepted at or after $2, if no kept key remains before them, and no
// more than the keys left to remove within the limit. Once an event keeps
// its key, every later one does: the rows that are deleted stay a prefix.
//
// p holds the prefixes before and after. Every row from the old keys to
// the new one is deleted (a range of the primary key, holding exactly kk
// and dl), every row after it up to the new payloads keeps only its key
// and digest (computed here for a row stored without one before schema
// version 2), the topics of due add to their expired counters, and the
// retention row moves.
//
// The statement returns the number of retention rows (1, or the table was
// tampered with), of events that left, and of keys deleted.
const expireSQL = `WITH r AS MATERIALIZED (
	SELECT payloads, keys FROM {schema}.retention
), k AS MATERIALIZED (
	SELECT seq, accepted FROM {schema}.events
	WHERE seq > (SELECT keys FROM r) AND seq <= (SELECT payloads FROM r)
	ORDER BY seq LIMIT $3::int8
), kk AS MATERIALIZED (
	SELECT seq FROM k WHERE seq < coalesce((SELECT min(seq) FROM k WHERE accepted >= $2::int8), {maxint})
), k1 AS MATERIALIZED (
	SELECT CASE WHEN (SELECT count(*) FROM kk) = (SELECT count(*) FROM k) AND (SELECT count(*) FROM k) < $3::int8
		THEN (SELECT payloads FROM r)
		ELSE coalesce((SELECT max(seq) FROM kk), (SELECT keys FROM r)) END AS keys,
		(SELECT count(*) FROM kk) AS n
), l AS MATERIALIZED (
	SELECT seq, topic, accepted FROM {schema}.events
	WHERE seq > (SELECT payloads FROM r) AND seq <= {watermark}
	ORDER BY seq LIMIT $3::int8
), due AS MATERIALIZED (
	SELECT seq, topic, accepted FROM l WHERE seq < coalesce((SELECT min(seq) FROM l WHERE accepted >= $1::int8), {maxint})
), dl AS MATERIALIZED (
	SELECT seq FROM due
	WHERE (SELECT keys FROM k1) = (SELECT payloads FROM r)
		AND seq < coalesce((SELECT min(seq) FROM due WHERE accepted >= $2::int8), {maxint})
	ORDER BY seq LIMIT (SELECT $3::int8 - n FROM k1)
), p AS MATERIALIZED (
	SELECT (SELECT payloads FROM r) AS payloads0, (SELECT keys FROM r) AS keys0,
		coalesce((SELECT max(seq) FROM due), (SELECT payloads FROM r)) AS payloads,
		coalesce((SELECT max(seq) FROM dl), (SELECT keys FROM k1)) AS keys
), del AS (
	DELETE FROM {schema}.events
	WHERE seq > (SELECT keys0 FROM p) AND seq <= (SELECT keys FROM p)
	RETURNING 1
), keep AS (
	UPDATE {schema}.events SET payload = NULL, source = '',
		phash = coalesce(phash, substring(sha256(coalesce(payload, ''::bytea)) FROM 1 FOR 16))
	WHERE seq > (SELECT greatest(keys, payloads0) FROM p) AND seq <= (SELECT payloads FROM p)
), cnt AS (
	INSERT INTO {schema}.counters AS c (topic, shard, received, unique_processed, duplicate_dropped, conflicts, expired)
	SELECT topic, {shard}, 0, 0, 0, 0, count(*) FROM due GROUP BY topic
	ON CONFLICT (topic, shard) DO UPDATE SET expired = c.expired + excluded.expired
), ret AS (
	UPDATE {schema}.retention SET payloads = p.payloads, keys = p.keys
	FROM p WHERE (p.payloads, p.keys) IS DISTINCT FROM (p.payloads0, p.keys0)
)
SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM due), (SELECT count(*) FROM del)`

// Expire implements [eventagg.Expirer] in one transaction and one round
// trip: it judges the watermark, locks the retention row, then one
// statement removes up to
// q.Limit kept keys accepted before q.KeysBefore, oldest first, then up to
// q.Limit events accepted before q.PayloadsBefore, oldest first: deleting
// them while their keys leave with them, then keeping the key and digest
// of the others; it adds to the expired counters and moves the retention
// row. At most q.Limit keys are deleted in all: ExpireResult.More is true
// when either limit was reached.
//
// Expire does not take the append lock, so it does not hold Appends back,
// nor do they hold it back. Like a listing, it removes no event above the
// watermark, below which no Append in flight can commit (see
// watermark.go): the events that left stay a prefix of the Seqs. It does
// not wait for Appends in flight, as it runs on the Aggregator's writer:
// it judges the sample the previous Expire took, and so lags one call
// behind when other replicas append all the time.
//
// On error nothing is removed and no counter moves; if the connection fails
// while the commit is in flight, the chunk may have been removed.
func (s *Store) Expire(ctx context.Context, q eventagg.ExpireQuery) (eventagg.ExpireResult, error) {
	if q.Limit <= 0 {
		return eventagg.ExpireResult{}, errors.New("postgres: ExpireQuery.Limit must be positive")
	}
	if err := ctx.Err(); err != nil {
		return eventagg.ExpireResult{}, err
	}
	if s.closed.Load() {
		return eventagg.ExpireResult{}, eventagg.ErrClosed
	}
	keysBefore := q.PayloadsBefore
	if !q.KeysBefore.IsZero() && q.KeysBefore.Before(keysBefore) {
		keysBefore = q.KeysBefore
	}
	var (
		rows, events, keys int64
		b                  pgx.Batch
	)
	wargs, found := s.queueExpireWatermark(&b)
	b.Queue(s.lockRetentionSQL)
	b.Queue(s.expireSQL, append([]any{nanos(q.PayloadsBefore), nanos(keysBefore), int64(q.Limit)}, wargs...)...).QueryRow(func(row pgx.Row) error {
		return row.Scan(&rows, &events, &keys)
	})
	// As for Append, the batch runs as one implicit transaction.
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return eventagg.ExpireResult{}, s.fail(ctx, err)
	}
	found()
	if rows != 1 {
		return eventagg.ExpireResult{}, fmt.Errorf("postgres: schema %q: the retention table holds %d rows, not 1", s.schema, rows)
	}
	return eventagg.ExpireResult{
		Events: int(events),
		Keys:   int(keys),
		More:   events == int64(q.Limit) || keys == int64(q.Limit),
	}, nil
}

// Nanoseconds since the Unix epoch of the earliest and latest times that
// an int64 holds.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// nanos returns t in nanoseconds since the Unix epoch, clamped to the range
// of an int64 (time.Time.UnixNano is undefined outside it): the zero Time
// is before every acceptance time.
func nanos(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}
