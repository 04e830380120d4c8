package postgres

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"iter"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/driver"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults of [Options].
const (
	// DefaultSchema is the schema used when Options.Schema is empty.
	DefaultSchema = "eventagg"
	// DefaultCounterShards is the number of counter rows per topic used when
	// Options.CounterShards is not positive.
	DefaultCounterShards = 8
	// DefaultWriteTimeout is the bound on one write used when
	// Options.WriteTimeout is zero.
	DefaultWriteTimeout = 30 * time.Second
)

// Options configures [Open]. The zero value is the default.
type Options struct {
	// Schema is the PostgreSQL schema that holds the store's tables; default
	// [DefaultSchema]. Open creates it if it does not exist. Replicas that
	// share their events open the same database with the same Schema; stores
	// on different schemas are independent. At most 63 bytes.
	Schema string
	// MaxConns bounds the connection pool. If zero, the DSN's pool_max_conns
	// applies, or else pgxpool's default: the greater of 4 and the number of CPUs.
	// Each Append and listing holds a connection while it runs: an
	// Aggregator's writer uses one at a time, and the listings and Stats
	// of its readers the others.
	MaxConns int32
	// ConnectTimeout is how long Open waits for the server. While Open
	// fails in a way that may pass (the connection is refused, reset or
	// times out; the server is starting up, shutting down or has no
	// connection slot free), it tries again, after pauses growing from
	// 100ms to 1s, until ConnectTimeout has passed or ctx ends, and then
	// returns the last error. Other errors (authentication, a missing
	// database, the schema) return at once. If zero, Open tries once.
	// After Open, the pool reconnects by itself: see the package
	// documentation's Outages.
	ConnectTimeout time.Duration
	// WriteTimeout bounds each Append and claim completion: if the server has
	// not answered within it (a network that drops packets without a word,
	// a server that hangs), the write gives up with an error matching
	// [ErrNoAnswer], its connection is dropped, and its commit is in doubt
	// (see Append). Without it such a write waits until the operating
	// system gives the connection up, which can take many minutes, and
	// holds the Aggregator's writer meanwhile. Default
	// [DefaultWriteTimeout]; negative: none.
	WriteTimeout time.Duration
	// CounterShards is how many rows hold the counters of each topic; default
	// [DefaultCounterShards]. Each Append adds to one of them, chosen at random,
	// and Stats sums them. Replicas may use different values, and the value
	// may change from one Open to the next.
	CounterShards int
}

// ErrNoAnswer is the error of a write that the server did not answer within
// Options.WriteTimeout. Its commit is in doubt: the batch may be stored, and
// resending it is safe.
var ErrNoAnswer = errors.New("postgres: no answer from the server within the write timeout; the commit is in doubt")

// writeCtx bounds a write by the write timeout.
func (s *Store) writeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.writeTO <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, s.writeTO, ErrNoAnswer)
}

// pageSize is how many events a listing reads per query. Between pages the
// listing holds no connection.
const pageSize = 500

// Store is an [eventagg.Store] in a PostgreSQL schema, for one or several
// eventagg replicas that share the schema. It implements
// [eventagg.Expirer] for retention, [eventagg.Watcher] for following, and
// [eventagg.Claimer] for claims. It is safe for concurrent use.
//
// See the package documentation for the schema, the ordering of sequence
// numbers across replicas, retention, and durability.
type Store struct {
	pool    *pgxpool.Pool
	schema  string // as given
	quoted  string // as an SQL identifier
	shards  int
	lockKey int64         // the append lock, which numbering and migrations take
	writeTO time.Duration // Options.WriteTimeout; 0: none

	beginSQL, insertSQL, statusSQL, statusLaterSQL, fastSQL, fastLaterSQL string // see prepareSQL
	numberLockSQL, numberSQL                                              string
	listSQL, listTopicSQL, statsSQL, queryStatsSQL, pingSQL               string
	lockRetentionSQL, expireSQL                                           string
	claimSQL, claimCheckSQL, endClaimSQL, claimCountsSQL                  string // see claims.go
	channel                                                               string // see watch.go

	numbered atomic.Int64 // events_pending's last value as the last numbering read it
	swept    atomic.Int64 // when the last sweep began, in Unix nanoseconds

	closed  atomic.Bool
	once    sync.Once
	stopped context.Context    // done once Close is called: it ends every Watch
	stop    context.CancelFunc // ends stopped
	watchMu sync.Mutex         // orders Watch's check of closed before Close's wait
	watches sync.WaitGroup     // the Watch calls under way
}

// Open connects to the PostgreSQL database named by dsn and returns a Store
// on opts.Schema, creating or upgrading the schema if needed. opts may be nil.
//
// dsn is a URL (postgres://user:password@host:5432/dbname?sslmode=require) or
// a keyword/value string (host=... dbname=...), as [pgxpool.ParseConfig]
// reads it; the PG* environment variables fill in what it leaves out.
// ctx bounds the connection and the migration, not the Store's life.
//
// Open fails if the database is unreachable (for longer than
// opts.ConnectTimeout, if set), its encoding is not UTF8, the
// schema holds a relation named like one of eventagg's (events, counters,
// claims, ...) but no eventagg version, or the schema was written by a
// newer version of eventagg.
func Open(ctx context.Context, dsn string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if len(o.Schema) > 63 || strings.ContainsRune(o.Schema, 0) {
		return nil, fmt.Errorf("postgres: invalid schema name %q (at most 63 bytes, no NUL)", o.Schema)
	}
	if o.CounterShards <= 0 {
		o.CounterShards = DefaultCounterShards
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.MaxConns < 0 {
		return nil, fmt.Errorf("postgres: negative MaxConns %d", o.MaxConns)
	}
	if o.ConnectTimeout < 0 {
		return nil, fmt.Errorf("postgres: negative ConnectTimeout %v", o.ConnectTimeout)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 { // the DSN's connect_timeout
		cfg.ConnConfig.ConnectTimeout = dialTimeout
	}
	params := cfg.ConnConfig.RuntimeParams
	// Append relies on each statement of its transactions taking a fresh
	// snapshot.
	params["default_transaction_isolation"] = "read committed"
	for name, value := range map[string]string{
		"application_name": "eventagg",
		// An Append may hold the append lock until it commits; should its
		// client vanish without closing the connection, the server notices
		// within about a minute and frees the lock for the other replicas.
		"tcp_keepalives_idle":     "30",
		"tcp_keepalives_interval": "10",
		"tcp_keepalives_count":    "3",
	} {
		if params[name] == "" {
			params[name] = value
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{
		pool:    pool,
		schema:  o.Schema,
		quoted:  pgx.Identifier{o.Schema}.Sanitize(),
		shards:  o.CounterShards,
		writeTO: max(o.WriteTimeout, 0),
		lockKey: lockKey(o.Schema),
	}
	s.stopped, s.stop = context.WithCancel(context.Background())
	s.prepareSQL()
	if err := s.migrateWaiting(ctx, o.ConnectTimeout); err != nil {
		pool.Close()
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("postgres: open schema %q: %w", o.Schema, err)
	}
	if err := s.sweep(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open schema %q: number the events left without a number: %w", o.Schema, err)
	}
	return s, nil
}

// lockKey returns the advisory lock key of a schema: a hash of its name, so
// that stores on different schemas do not wait for each other (a collision
// would only make them wait).
func lockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("eventagg append lock\x00" + schema))
	return int64(h.Sum64())
}

// quoteLiteral returns s as an SQL string literal (standard_conforming_strings on).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func (s *Store) prepareSQL() {
	s.channel = channelName(s.schema)
	seq := quoteLiteral(s.quoted + ".events_seq")
	pending := quoteLiteral(s.quoted + ".events_pending")
	// An Append is two transactions (see the package documentation's
	// Append). The first stores the batch, parallel to every other Append:
	// insertSQL inserts the first copy of each key not stored yet, with a
	// provisional, negative Seq, and statusSQL (or statusLaterSQL) judges
	// every event and adds to the counters. The second, under the schema's
	// advisory lock, numbers the events stored: numberSQL.
	//
	// beginSQL starts the first. Its set_config makes PostgreSQL run the
	// statements of the transaction with their generic plans, made once per
	// connection: with the default plan_cache_mode, PostgreSQL would plan
	// them afresh for every small batch (the generic plan's estimate is
	// for more events than that), which costs more than running them.
	// set_config with is_local true lasts until the end of the transaction,
	// as SET LOCAL does.
	s.beginSQL = `SELECT set_config('plan_cache_mode', 'force_generic_plan', true)`
	// numberLockSQL begins the numbering transaction: it takes the append
	// lock if an event of the batch's keys ($2, $3) has a provisional Seq,
	// or if $4 (a sweep), and records in eventagg.numbering whether it did,
	// which numberSQL, run next, requires. An Append whose events got their
	// Seq in the fast path (below) needs no lock: it only reads them back.
	// Each key is looked up by a scalar subquery, in the unique index.
	//
	// numberSQL runs with its generic plan too, and that plan must look
	// events up in their indexes however few events the table held when
	// it was made (once per connection): with sequential scans and hash or
	// merge joins off, the planner picks index scans and nested loops,
	// which is what numbering a few events among millions takes. The cost
	// it then gives the one scan it cannot avoid (of a sequence) would
	// pass jit_above_cost, and compiling the plan takes longer than
	// running it: jit is off too.
	s.numberLockSQL = s.expand(`SELECT set_config('plan_cache_mode', 'force_generic_plan', true),
	set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true),
	set_config('enable_mergejoin', 'off', true), set_config('jit', 'off', true),
	set_config('eventagg.numbering', CASE WHEN $4::bool OR EXISTS (
		SELECT FROM unnest($2::text[], $3::text[]) AS k (topic, event_id)
		WHERE (SELECT e.seq FROM {schema}.events e WHERE e.topic = k.topic AND e.event_id = k.event_id) < 0
	) THEN (SELECT 'on' FROM (SELECT pg_advisory_xact_lock($1::int8)) l) ELSE 'off' END, true)`)

	// fastSQL (fastLaterSQL for batches with later copies of their keys)
	// is the first transaction's statement when no other Append races it:
	// it tries the append lock (pg_try_advisory_xact_lock, which does not
	// wait), and if it gets it, reserves a block of sequence numbers, so
	// that the events it stores get their Seq at once, as before schema
	// version 5, and need no numbering; if not, they get a provisional Seq
	// from events_pending in the order of the batch, for numberSQL. One
	// statement then judges every event against the stored copy of its key
	// in the statement's snapshot (scalar subqueries, in the unique index),
	// inserts the first copy of each new key, in key order, and adds to the
	// counters, as statusSQL describes. A key that another Append stored
	// after the snapshot was taken makes the statement fail: with the lock,
	// the plain insert (insl) with a unique violation; without it, the
	// insert that skips stored keys (ins, ON CONFLICT DO NOTHING, which
	// costs a record more per row in the WAL) stores fewer events than
	// were judged new, and the statement fails with SQLSTATE EA001 (the
	// function append_race). The transaction is rolled back, and Append
	// runs insertSQL and statusSQL instead, whose two snapshots judge such
	// a key right. A lock taken
	// is held until the commit, which keeps the Seqs in commit order.
	//
	// Parameters: $1 the number of first copies, $2-$7 their columns as
	// insertSQL's, $8 RejectConflicts, $9 the counter shard, $10 the
	// acceptance time, $11 the append lock's key; fastLaterSQL also
	// $12-$16, as statusLaterSQL's $7-$11. It returns, for the events that
	// are not duplicates, their ordinal, status, and Seq (0 if
	// provisional, or for a conflict), after a first row (0, 0, 0, 1 if
	// it notified, the number of the batch's keys whose stored copy has a
	// provisional Seq: left by an Append that failed, which the
	// numbering transaction then numbers). With the lock, it notifies the
	// schema's channel if it stored events, as numberSQL does for those it
	// numbers.
	const fastFirst = `WITH t AS MATERIALIZED (
	SELECT pg_try_advisory_xact_lock($11::int8) AS locked
), b AS MATERIALIZED (
	SELECT CASE WHEN t.locked THEN setval({seq}, nextval({seq}) + $1::int8 - 1) - $1::int8 END AS base FROM t
), f AS MATERIALIZED (
	SELECT f.ord, f.topic, f.event_id, f.ts, f.source, f.payload, f.phash,
		CASE WHEN (SELECT locked FROM t) THEN NULL ELSE -nextval({pending}) END AS pseq,
		f.c % 10 AS status, f.c >= 10 AS provisional
	FROM (SELECT f.*, coalesce((
			SELECT CASE WHEN ` + storedDigest + ` = f.phash THEN 1 ELSE 2 END
				+ CASE WHEN e.seq < 0 THEN 10 ELSE 0 END
			FROM {schema}.events e WHERE e.topic = f.topic AND e.event_id = f.event_id), 0) AS c
		FROM unnest($2::text[], $3::text[], $4::int8[], $5::text[], $6::bytea[], $7::bytea[])
			WITH ORDINALITY AS f (topic, event_id, ts, source, payload, phash, ord) ORDER BY ord) f
)`
	fastWrite := countCTE(8, 9) + `, insl AS (
	INSERT INTO {schema}.events (seq, topic, event_id, ts, source, payload, phash, accepted)
	SELECT b.base + f.ord, f.topic, f.event_id, f.ts, f.source, f.payload, f.phash, $10::int8
	FROM b, f, rej WHERE b.base IS NOT NULL AND f.status = 0 AND NOT rej.rejected ORDER BY f.topic, f.event_id
	RETURNING 1
), ins AS (
	INSERT INTO {schema}.events (seq, topic, event_id, ts, source, payload, phash, accepted)
	SELECT f.pseq, f.topic, f.event_id, f.ts, f.source, f.payload, f.phash, $10::int8
	FROM b, f, rej WHERE b.base IS NULL AND f.status = 0 AND NOT rej.rejected ORDER BY f.topic, f.event_id
	ON CONFLICT (topic, event_id) DO NOTHING
	RETURNING 1
), ok AS MATERIALIZED (
	SELECT CASE WHEN (SELECT count(*) FROM insl) + (SELECT count(*) FROM ins) = (SELECT count(*) FROM f, rej WHERE f.status = 0 AND NOT rej.rejected)
		THEN true ELSE {schema}.append_race() END AS ok
), w AS MATERIALIZED (
	SELECT pg_notify({channel}, {schemaname}) FROM t WHERE t.locked AND (SELECT count(*) FROM insl) > 0
)
SELECT 0::int8, 0::int8, 0::int8, (SELECT count(*) FROM w), (SELECT count(*) FROM f WHERE f.provisional) FROM ok WHERE ok.ok
UNION ALL
SELECT o.ord, o.status, CASE WHEN o.status = 0 THEN coalesce(b.base + o.ord, 0) ELSE 0 END, 0, 0
FROM o, b, rej, ok WHERE ok.ok AND (o.status = 2 OR o.status = 0 AND NOT rej.rejected)`
	fast := func(sql string) string {
		return s.expand(strings.NewReplacer("{seq}", seq, "{pending}", pending,
			"{channel}", quoteLiteral(s.channel), "{schemaname}", quoteLiteral(s.schema)).Replace(sql))
	}
	s.fastSQL = fast(fastFirst + firstOnly + fastWrite)
	s.fastLaterSQL = fast(fastFirst + laterCTE(12) + fastWrite)

	// insertSQL inserts the first copy of each key of a batch (driver.FirstInBatch)
	// unless the key is stored, in one statement. Parameters: $1-$6 the
	// columns of the first copies, phash being driver.PayloadHash of the
	// payload; $7 the acceptance time of the batch, in nanoseconds. Each
	// row gets as its provisional Seq the negated next value of
	// events_pending, drawn in the order of the batch, so that numberSQL
	// can number the batch in its order. The rows are inserted in key
	// order: ON CONFLICT waits for a transaction that is inserting the same
	// key, and two Appends inserting their keys in the same order cannot
	// wait for each other in a cycle. A key stored by a transaction that
	// committed after the statement's snapshot was taken is not inserted
	// either (ON CONFLICT checks the index, not the snapshot): statusSQL,
	// with a newer snapshot, judges the copy against it.
	s.insertSQL = s.expand(`WITH f AS MATERIALIZED (
	SELECT -nextval(` + pending + `) AS seq, f.topic, f.event_id, f.ts, f.source, f.payload, f.phash
	FROM (SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::bytea[], $6::bytea[])
		WITH ORDINALITY AS f (topic, event_id, ts, source, payload, phash, ord) ORDER BY ord) f
)
INSERT INTO {schema}.events (seq, topic, event_id, ts, source, payload, phash, accepted)
SELECT seq, topic, event_id, ts, source, payload, phash, $7::int8 FROM f ORDER BY topic, event_id
ON CONFLICT (topic, event_id) DO NOTHING`)

	// statusSQL runs after insertSQL in its transaction, with a snapshot
	// that holds the rows insertSQL inserted and every Append committed
	// before it began, and decides the outcome of every event of the batch:
	// 0 for a new key (its row's xmin is this transaction), 1 for a
	// duplicate, 2 for a conflict. Each stored copy is looked up in the
	// unique index one row at a time, by a scalar subquery: a join, even a
	// LATERAL one, could be planned as a scan of every event. A stored copy is a duplicate if its digest is the new
	// copy's; one without phash, stored before schema version 2, has the
	// digest of its payload computed. A kept key, whose event left (see
	// expire.go), has no payload but always a phash. A key whose row an
	// Expire removed since insertSQL looked is counted a duplicate, as if
	// the Append had committed first.
	//
	// Parameters: $1 the number of first copies, $2-$4 their topic,
	// event_id and phash; $5 RejectConflicts; $6 the counter shard.
	// statusLaterSQL, for batches that hold later copies of their keys,
	// also takes $7-$11: their topic and event_id, the ordinal (1-based) of
	// the first copy of their key, whether their payload is the first
	// copy's (the caller compares them), and, when it is not, their phash.
	// A later copy with the payload of its key's first copy has the first
	// copy's status, but duplicate for new; one with another payload is
	// judged against the stored copy, the first copy itself if that is new.
	// o holds the status of every event. With $5, a conflict anywhere makes
	// rej true; nothing is counted, and the caller rolls the transaction back.
	//
	// The statement returns, for the events that are not duplicates, the
	// ordinal of their row (first copies 1..$1, later copies $1 + their
	// ordinal) and their status.
	const first = `WITH f AS MATERIALIZED (
	SELECT f.ord, f.topic, coalesce((
		SELECT CASE
			WHEN e.xmin = pg_current_xact_id_if_assigned()::xid THEN 0
			WHEN ` + storedDigest + ` = f.phash THEN 1
			ELSE 2 END
		FROM {schema}.events e WHERE e.topic = f.topic AND e.event_id = f.event_id), 1) AS status
	FROM unnest($2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS f (topic, event_id, phash, ord)
)`
	const answer = `
SELECT o.ord, o.status FROM o, rej
WHERE o.status = 2 OR o.status = 0 AND NOT rej.rejected`
	s.statusSQL = s.expand(first + firstOnly + countCTE(5, 6) + answer)
	s.statusLaterSQL = s.expand(first + laterCTE(7) + countCTE(5, 6) + answer)

	// numberSQL runs after numberLockSQL, in a transaction of its own
	// after the Append's has committed, and gives the events stored and
	// not numbered yet their Seq, in the order of their provisional
	// numbers, from a block reserved from events_seq; it notifies the
	// schema's channel if it numbered any. The events it numbers are those
	// of the batch's keys (the first copies, $2 and $3) that are not
	// numbered, the Append's own and any another Append stored, and every
	// event not numbered whose provisional number lies after $1 and among
	// the $4 latest (events_pending's last value down): so that one
	// numbering serves the Appends that committed while the previous one
	// waited for its commit, and those find their events numbered. A
	// sweep passes $1 = 0, to number the events that Appends which failed
	// between their two transactions left without a number.
	//
	// The batch's keys are looked up in the unique index of the keys: its
	// Seq, compared as seq + 0, is no condition that could make the
	// generic plan, made when the table held few events, look a key up in
	// the index of (topic, seq) instead and scan every event of the topic.
	//
	// It returns a first row (0, events_pending's last value, 1 if it
	// notified), then a row per first copy of the batch whose key is
	// stored: its ordinal and the Seq of the stored copy, which it gave
	// (p keeps the ordinal of the batch's keys) or another numbering did.
	s.numberSQL = s.expand(`WITH hi AS MATERIALIZED (
	SELECT last_value AS l FROM ` + s.quoted + `.events_pending
), p AS MATERIALIZED (
	SELECT DISTINCT ON (seq) seq, ord FROM (
		SELECT seq, NULL::int8 AS ord FROM {schema}.events
		WHERE seq >= -(SELECT l FROM hi) AND seq < -greatest($1::int8, (SELECT l FROM hi) - $4::int8)
		UNION ALL
		SELECT e.seq, k.ord FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS k (topic, event_id, ord)
		JOIN {schema}.events e ON e.topic = k.topic AND e.event_id = k.event_id WHERE e.seq + 0 < 0
	) p WHERE current_setting('eventagg.numbering', true) = 'on' ORDER BY seq, ord NULLS LAST
), b AS MATERIALIZED (
	SELECT setval(` + seq + `, nextval(` + seq + `) + count(*) - 1) - count(*) AS base FROM p HAVING count(*) > 0
), n AS MATERIALIZED (
	SELECT p.seq AS old, p.ord, b.base + row_number() OVER (ORDER BY p.seq DESC) AS new FROM p, b
), u AS (
	UPDATE {schema}.events e SET seq = n.new FROM n WHERE e.seq = n.old
), w AS (
	SELECT pg_notify(` + quoteLiteral(s.channel) + `, ` + quoteLiteral(s.schema) + `) FROM b
)
SELECT 0::int8, (SELECT l FROM hi), (SELECT count(*) FROM w)
UNION ALL
SELECT ord, new, 0 FROM n WHERE ord IS NOT NULL
UNION ALL
SELECT k.ord, e.seq, 0 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS k (topic, event_id, ord)
JOIN {schema}.events e ON e.topic = k.topic AND e.event_id = k.event_id WHERE e.seq + 0 > 0`)
	// Listings start after the events that have left (the retention row's
	// payloads, read in the listing's snapshot): a cursor at one of them
	// goes on from the next event that is still there.
	const (
		cols  = `SELECT seq, topic, event_id, ts, source, payload FROM {schema}.events `
		after = `seq > greatest($1::int8, (SELECT payloads FROM {schema}.retention)) `
	)
	s.listSQL = s.expand(cols + `WHERE ` + after + `ORDER BY seq LIMIT $2`)
	s.listTopicSQL = s.expand(cols + `WHERE topic = $3 AND ` + after + `ORDER BY seq LIMIT $2`)
	s.statsSQL = s.expand(`SELECT topic, sum(received)::int8, sum(unique_processed)::int8,
	sum(duplicate_dropped)::int8, sum(conflicts)::int8, sum(expired)::int8 FROM {schema}.counters GROUP BY topic`)
	// The totals come first, with a NULL topic, then the page of topics.
	s.queryStatsSQL = s.expand(`WITH t AS (SELECT topic, sum(received)::int8 AS r, sum(unique_processed)::int8 AS u,
	sum(duplicate_dropped)::int8 AS d, sum(conflicts)::int8 AS c, sum(expired)::int8 AS x FROM {schema}.counters GROUP BY topic)
SELECT NULL::text, count(*)::int8, coalesce(sum(r), 0)::int8, coalesce(sum(u), 0)::int8,
	coalesce(sum(d), 0)::int8, coalesce(sum(c), 0)::int8, coalesce(sum(x), 0)::int8 FROM t
UNION ALL
(SELECT topic, 0, r, u, d, c, x FROM t WHERE topic > $1 ORDER BY topic LIMIT $2)`)
	s.expireSQL = s.expand(strings.NewReplacer("{maxint}", strconv.FormatInt(math.MaxInt64, 10),
		"{shard}", strconv.Itoa(expireShard)).Replace(expireSQL))
	s.lockRetentionSQL = s.expand(lockRetentionSQL)
	s.pingSQL = s.expand(`SELECT version FROM {schema}.eventagg_schema`)
	s.prepareClaims()
}

// The parts that the statements judging a batch share (statusSQL,
// statusLaterSQL, fastSQL, fastLaterSQL): each starts with a CTE f holding
// the first copies of the batch's keys with their status, $1 being their
// number.

// storedDigest is the digest of a stored copy e of a key: its phash, or,
// for a row stored before schema version 2, that of its payload.
const storedDigest = `coalesce(e.phash, substr(sha256(coalesce(e.payload, ''::bytea)), 1, 16))`

// firstOnly is the CTE o of the outcomes for a batch without later copies
// of its keys. Its condition on ord, always true, gives $1 its type in the
// statements that would not use it otherwise.
const firstOnly = `, o AS NOT MATERIALIZED (
	SELECT ord, topic, status FROM f WHERE ord <= $1::int8
)`

// laterCTE returns the CTEs that judge the later copies of the batch's
// keys, whose topic, event_id, first copy's ordinal, sameness of payload
// and phash are the parameters $p to $p+4, and the CTE o of every outcome.
// A later copy with the payload of its key's first copy has the first
// copy's status, but duplicate for new; one with another payload is
// judged against the stored copy, or else (not in the snapshot) conflicts
// with the first copy, stored now.
func laterCTE(p int) string {
	return strings.NewReplacer("$p0", param(p), "$p1", param(p+1), "$p2", param(p+2), "$p3", param(p+3), "$p4", param(p+4)).Replace(`, fs AS MATERIALIZED (
	SELECT array_agg(status ORDER BY ord) AS status FROM f
), l AS MATERIALIZED (
	SELECT $1::int8 + l.ord AS ord, l.topic, CASE
		WHEN l.same THEN CASE (SELECT fs.status[l.first] FROM fs) WHEN 2 THEN 2 ELSE 1 END
		ELSE coalesce((
			SELECT CASE WHEN ` + storedDigest + ` = l.phash THEN 1 ELSE 2 END
			FROM {schema}.events e WHERE e.topic = l.topic AND e.event_id = l.event_id), 2)
		END AS status
	FROM unnest($p0::text[], $p1::text[], $p2::int8[], $p3::bool[], $p4::bytea[])
		WITH ORDINALITY AS l (topic, event_id, first, same, phash, ord)
), o AS MATERIALIZED (
	SELECT ord, topic, status FROM f UNION ALL SELECT ord, topic, status FROM l
)`)
}

// countCTE returns the CTEs rej, true if parameter $reject
// (RejectConflicts) holds and a conflict is among the outcomes o, and cnt,
// which unless rej adds the outcomes to each topic's counter shard
// $shard, in topic order, so that two Appends of several topics take their
// counter rows in the same order.
func countCTE(reject, shard int) string {
	return `, rej AS MATERIALIZED (
	SELECT ` + param(reject) + `::bool AND EXISTS (SELECT FROM o WHERE status = 2) AS rejected
), cnt AS (
	INSERT INTO {schema}.counters AS c (topic, shard, received, unique_processed, duplicate_dropped, conflicts)
	SELECT o.topic, ` + param(shard) + `::int4, count(*), count(*) FILTER (WHERE status = 0), count(*) FILTER (WHERE status <> 0),
		count(*) FILTER (WHERE status = 2)
	FROM o, rej WHERE NOT rej.rejected GROUP BY o.topic ORDER BY o.topic
	ON CONFLICT (topic, shard) DO UPDATE SET
		received = c.received + excluded.received,
		unique_processed = c.unique_processed + excluded.unique_processed,
		duplicate_dropped = c.duplicate_dropped + excluded.duplicate_dropped,
		conflicts = c.conflicts + excluded.conflicts
)`
}

// param returns the SQL placeholder of parameter n.
func param(n int) string { return "$" + strconv.Itoa(n) }

// Schema returns the name of the schema that holds the store's tables.
func (s *Store) Schema() string { return s.schema }

// Append implements [eventagg.Store.Append] in one or two transactions, in
// one round trip each, and runs alongside the Appends of every replica (see
// the package documentation's Append). The first tries the schema's
// append lock without waiting; it inserts the first copy of each key not
// stored yet (ON CONFLICT on the key), with its Seq if it got the lock and
// a provisional one if not, judges every event of the batch against the
// stored copy of its key (comparing their payloads' digests), adds to one
// counter shard of each topic, and commits. Only if its events have a
// provisional Seq, the second waits for the append lock and gives them
// their Seq, in the order of the batch, together with the events that
// other Appends committed meanwhile, and notifies the schema's channel for
// [Store.Watch]. Append returns after PostgreSQL acknowledged the commits.
// With opts.RejectConflicts, a batch holding a conflict stores and counts
// nothing, and Append returns a [*eventagg.ConflictError].
//
// If the connection fails or ctx ends while a commit is in flight, Append
// returns an error although the batch may have been stored; see the package
// documentation. Events stored by an Append that failed before numbering
// them are numbered by the next Append of one of their keys, or by a sweep
// (see the package documentation's Append).
func (s *Store) Append(ctx context.Context, events []eventagg.Event, opts eventagg.AppendOptions) ([]eventagg.Outcome, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, eventagg.ErrClosed
	}
	outcomes := make([]eventagg.Outcome, len(events))
	if len(events) == 0 {
		return outcomes, nil
	}
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	defer conn.Release()
	b := newAppendBatch(events)
	var q pgx.Batch
	q.Queue("BEGIN")
	var left bool
	s.queueFast(&q, b, events, opts, outcomes, &left)
	q.Queue("COMMIT")
	err = s.send(ctx, conn, &q)
	if !raced(err) {
		if err != nil {
			return nil, err
		}
		// The second transaction only if the events stored have a
		// provisional Seq (another Append held the lock), a key of the
		// batch was left so, or for a sweep.
		provisional := slices.ContainsFunc(outcomes, func(o eventagg.Outcome) bool { return o.Status == eventagg.Stored && o.Seq == 0 })
		if sweep := s.sweepDue(); provisional || left || sweep {
			q = pgx.Batch{}
			s.queueNumber(&q, b, outcomes, sweep)
			if err := s.send(ctx, conn, &q); err != nil {
				return nil, err
			}
		}
		return outcomes, s.finish(events, outcomes, opts)
	}
	// Another Append stored a key of the batch after the fast statement's
	// snapshot was taken: the slow path judges it right.
	q = pgx.Batch{}
	q.Queue("BEGIN")
	if err := s.storeSlow(ctx, conn, &q, b, events, opts, outcomes, nil); err != nil {
		return nil, err
	}
	return outcomes, nil
}

// storeSlow runs q, which holds BEGIN and the statements the caller
// queued after it, followed by the two-statement first transaction of an
// Append of events (see queueStore), then commits it and numbers the
// events stored. The first transaction is rolled back instead if opts
// rejects a conflict, or if check, which runs once q's answers are in and
// may be nil, returns an error: storeSlow then returns that error. Only
// then does the commit take a round trip of its own.
func (s *Store) storeSlow(ctx context.Context, conn *pgxpool.Conn, q *pgx.Batch, b *appendBatch, events []eventagg.Event,
	opts eventagg.AppendOptions, outcomes []eventagg.Outcome, check func() error) error {
	s.queueStore(q, b, events, opts, outcomes)
	if check != nil || opts.RejectConflicts {
		if err := s.send(ctx, conn, q); err != nil {
			return err
		}
		err := rejected(events, outcomes, opts)
		if check != nil {
			err = cmp.Or(check(), err) // a lost claim first
		}
		if err != nil {
			abort(ctx, conn)
			return err
		}
		*q = pgx.Batch{}
	}
	q.Queue("COMMIT")
	s.queueNumber(q, b, outcomes, s.sweepDue())
	if err := s.send(ctx, conn, q); err != nil {
		return err
	}
	return numbered(outcomes)
}

// raced reports whether err is the failure of the fast statement when
// another Append stored a key of the batch after its snapshot was taken:
// SQLSTATE EA001 (append_race) from the insert that skips keys stored
// meanwhile, or a unique violation of the keys from the one that does not.
func raced(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code == "EA001" || pgErr.Code == "23505" && pgErr.ConstraintName == "events_topic_event_id_key"
}

// finish returns the error of an Append whose transactions ran: a
// [*eventagg.ConflictError] if opts.RejectConflicts rejected the batch,
// and an error if an event stored has no Seq.
func (s *Store) finish(events []eventagg.Event, outcomes []eventagg.Outcome, opts eventagg.AppendOptions) error {
	if err := rejected(events, outcomes, opts); err != nil {
		return err
	}
	return numbered(outcomes)
}

// queueFast queues on q, after the caller's BEGIN, the fast statement of
// an Append's first transaction (see fastSQL). Once q has run, outcomes
// holds the status of every event and the Seq of those stored, but for
// those with a provisional Seq, which [Store.queueNumber]'s statement sets;
// *left tells whether a key of the batch is stored with a provisional Seq
// by an Append that failed before numbering it.
func (s *Store) queueFast(q *pgx.Batch, b *appendBatch, events []eventagg.Event, opts eventagg.AppendOptions, outcomes []eventagg.Outcome, left *bool) {
	accepted := startStore(q, s.beginSQL, outcomes, opts)
	sql, args := s.fastSQL, []any{int64(len(b.first)), b.topics, b.ids, b.ts, b.sources, b.payloads, b.hashes,
		opts.RejectConflicts, int32(rand.IntN(s.shards)), accepted, s.lockKey}
	if len(b.later) > 0 {
		sql, args = s.fastLaterSQL, append(args, b.laterArgs()...)
	}
	q.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var ord, status, seq, notified, provisional int64
			if err := rows.Scan(&ord, &status, &seq, &notified, &provisional); err != nil {
				return err
			}
			if ord == 0 {
				*left = provisional > 0
			} else if err := b.judged(outcomes, ord, status, seq); err != nil {
				return err
			}
		}
		return rows.Err()
	})
}

// startStore queues beginSQL, the first statement of an Append's first
// transaction after BEGIN, and makes every outcome a duplicate until the
// statement that judges the batch says otherwise. It returns the batch's
// acceptance time, in nanoseconds.
func startStore(q *pgx.Batch, beginSQL string, outcomes []eventagg.Outcome, opts eventagg.AppendOptions) int64 {
	for i := range outcomes {
		outcomes[i] = eventagg.Outcome{Status: eventagg.Duplicate}
	}
	q.Queue(beginSQL)
	if opts.AcceptedAt.IsZero() {
		return nanos(time.Now())
	}
	return nanos(opts.AcceptedAt)
}

// send runs q on conn; if it fails, it rolls back the transaction it
// leaves open, if any, and returns the error as [Store.fail] words it.
func (s *Store) send(ctx context.Context, conn *pgxpool.Conn, q *pgx.Batch) error {
	if err := conn.SendBatch(ctx, q).Close(); err != nil {
		abort(ctx, conn)
		return s.fail(ctx, err)
	}
	return nil
}

// abort rolls back the transaction open on conn, if any: a connection
// returned to the pool in a transaction is closed instead. A connection
// that fails meanwhile is closed as well.
func abort(ctx context.Context, conn *pgxpool.Conn) {
	if conn.Conn().PgConn().TxStatus() == 'I' || conn.Conn().IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dialTimeout)
	defer cancel()
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		conn.Conn().PgConn().Close(ctx) // the pool drops it
	}
}

// queueStore queues on q the first transaction of an Append of events,
// which must not be empty, up to its commit, after the caller's BEGIN: the
// insert of the new keys, and the statement that judges every event and
// counts them. Once q
// has run, outcomes, which has an entry per event, holds their statuses;
// the Seq of those stored comes from [Store.queueNumber]'s statement.
// [Store.Complete] queues its own statement before.
func (s *Store) queueStore(q *pgx.Batch, b *appendBatch, events []eventagg.Event, opts eventagg.AppendOptions, outcomes []eventagg.Outcome) {
	accepted := startStore(q, s.beginSQL, outcomes, opts)
	q.Queue(s.insertSQL, b.topics, b.ids, b.ts, b.sources, b.payloads, b.hashes, accepted)
	sql, args := s.statusSQL, []any{int64(len(b.first)), b.topics, b.ids, b.hashes,
		opts.RejectConflicts, int32(rand.IntN(s.shards))}
	if len(b.later) > 0 {
		sql, args = s.statusLaterSQL, append(args, b.laterArgs()...)
	}
	q.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var ord, status int64
			if err := rows.Scan(&ord, &status); err != nil {
				return err
			}
			if err := b.judged(outcomes, ord, status, 0); err != nil {
				return err
			}
		}
		return rows.Err()
	})
}

// judged records in outcomes the status (0 stored, 2 conflict) and Seq
// (0 if not known yet) that a statement returned for the event of ordinal
// ord of the batch.
func (b *appendBatch) judged(outcomes []eventagg.Outcome, ord, status, seq int64) error {
	i, ok := b.index(ord)
	if !ok {
		return fmt.Errorf("postgres: append returned ordinal %d of %d", ord, len(outcomes))
	}
	if status == 0 {
		outcomes[i] = eventagg.Outcome{Status: eventagg.Stored, Seq: seq}
	} else {
		outcomes[i].Status = eventagg.Conflict
	}
	return nil
}

// laterArgs returns the parameters that describe the later copies of the
// batch's keys, in the order statusLaterSQL and fastLaterSQL take them.
func (b *appendBatch) laterArgs() []any {
	return []any{b.laterTopics, b.laterIDs, b.laterFirst, b.laterSame, b.laterHashes}
}

// queueNumber queues on q the second transaction of an Append: the append
// lock and the numbering of the events stored (see numberSQL), which sets
// the Seq of the outcomes stored. b is the Append's batch, or nil for a
// sweep.
func (s *Store) queueNumber(q *pgx.Batch, b *appendBatch, outcomes []eventagg.Outcome, sweep bool) {
	low, span := s.numbered.Load(), int64(numberSpan)
	if sweep {
		low, span = 0, sweepSpan
	}
	if b == nil { // Open's sweep: every provisional number
		span = math.MaxInt64
	}
	var topics, ids []string
	if b != nil {
		topics, ids = b.topics, b.ids
	}
	q.Queue(s.numberLockSQL, s.lockKey, topics, ids, sweep)
	q.Queue(s.numberSQL, low, topics, ids, span).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var ord, seq, notified int64
			if err := rows.Scan(&ord, &seq, &notified); err != nil {
				return err
			}
			if ord == 0 {
				for w := s.numbered.Load(); seq > w && !s.numbered.CompareAndSwap(w, seq); w = s.numbered.Load() {
				}
				continue
			}
			if ord < 1 || b == nil || ord > int64(len(b.first)) {
				return fmt.Errorf("postgres: numbering returned ordinal %d", ord)
			}
			if o := &outcomes[b.first[ord-1]]; o.Status == eventagg.Stored {
				o.Seq = seq
			}
		}
		return rows.Err()
	})
}

// How far numberings look for events with a provisional number besides
// their batch's (see numberSQL): an Append's numbering, among the
// numberSpan latest provisional numbers after the last this replica's
// numbering saw; a sweep, which an Append runs at most every sweepEvery,
// among the sweepSpan latest; Open's sweep, among all of them.
const (
	numberSpan = 100_000
	sweepSpan  = 1_000_000
	sweepEvery = 30 * time.Second
)

// sweepDue reports whether an Append should sweep now, and if so makes the
// next sweep due sweepEvery later.
func (s *Store) sweepDue() bool {
	last, now := s.swept.Load(), time.Now().UnixNano()
	return now-last >= int64(sweepEvery) && s.swept.CompareAndSwap(last, now)
}

// numbered returns an error if an outcome stored has no Seq: its event was
// removed before it could be numbered, which only a retention that expires
// events as soon as they are stored could do.
func numbered(outcomes []eventagg.Outcome) error {
	for i, o := range outcomes {
		if o.Status == eventagg.Stored && o.Seq <= 0 {
			return fmt.Errorf("postgres: event %d of the batch was stored, and removed before it was numbered", i)
		}
	}
	return nil
}

// sweep numbers every event stored and left without a number by an Append
// that failed between its two transactions.
func (s *Store) sweep(ctx context.Context) error {
	var q pgx.Batch
	s.queueNumber(&q, nil, nil, true)
	s.swept.Store(time.Now().UnixNano())
	return s.pool.SendBatch(ctx, &q).Close()
}

// rejected returns a [*eventagg.ConflictError] naming the first conflict
// among outcomes if opts.RejectConflicts, in which case the append
// statement stored and counted nothing; nil otherwise.
func rejected(events []eventagg.Event, outcomes []eventagg.Outcome, opts eventagg.AppendOptions) error {
	if !opts.RejectConflicts {
		return nil
	}
	for i := range outcomes {
		if outcomes[i].Status == eventagg.Conflict {
			return &eventagg.ConflictError{Index: i, Key: events[i].Key()}
		}
	}
	return nil
}

// appendBatch holds the parameters of the append statement for a batch: the
// columns of the first copy of each key, and what the later copies, if any,
// are compared with.
type appendBatch struct {
	first    []int // first[ord-1] is the position in the batch of the first copy of ordinal ord
	topics   []string
	ids      []string
	ts       []int64
	sources  []string
	payloads [][]byte
	hashes   [][]byte

	later         []int // later[ord-1] is the position in the batch of the later copy of ordinal ord
	laterTopics   []string
	laterIDs      []string
	laterFirst    []int64 // the ordinal of the first copy of its key
	laterSame     []bool  // whether its payload is the first copy's
	laterHashes   [][]byte
	laterPayloads [][]byte // when not the same as the first copy's
}

// newAppendBatch splits events into the first copies of their keys and the
// later ones, and compares each later copy's payload with its first copy's.
func newAppendBatch(events []eventagg.Event) *appendBatch {
	isFirst := driver.FirstInBatch(events)
	b := &appendBatch{first: make([]int, 0, len(events))}
	for i, first := range isFirst {
		if first {
			b.first = append(b.first, i)
		} else {
			b.later = append(b.later, i)
		}
	}
	n := len(b.first)
	b.topics, b.ids, b.sources = make([]string, n), make([]string, n), make([]string, n)
	b.ts, b.payloads, b.hashes = make([]int64, n), make([][]byte, n), make([][]byte, n)
	digests := make([]byte, n*driver.HashSize) // one allocation for the batch's digests
	for ord, i := range b.first {
		e := &events[i]
		b.topics[ord], b.ids[ord], b.sources[ord] = e.Topic, e.EventID, e.Source
		b.ts[ord] = e.Timestamp.UnixNano()
		if len(e.Payload) > 0 {
			b.payloads[ord] = e.Payload // NULL for none
		}
		h := digests[ord*driver.HashSize : (ord+1)*driver.HashSize : (ord+1)*driver.HashSize]
		copy(h, driver.PayloadHash(e.Payload))
		b.hashes[ord] = h
	}
	if len(b.later) == 0 {
		return b
	}
	ords := make(map[eventagg.Key]int, n)
	for ord, i := range b.first {
		ords[events[i].Key()] = ord
	}
	m := len(b.later)
	b.laterTopics, b.laterIDs = make([]string, m), make([]string, m)
	b.laterFirst, b.laterSame = make([]int64, m), make([]bool, m)
	b.laterHashes, b.laterPayloads = make([][]byte, m), make([][]byte, m)
	for j, i := range b.later {
		e := &events[i]
		ord := ords[e.Key()]
		b.laterTopics[j], b.laterIDs[j] = e.Topic, e.EventID
		b.laterFirst[j] = int64(ord) + 1
		b.laterSame[j] = bytes.Equal(e.Payload, events[b.first[ord]].Payload)
		if !b.laterSame[j] {
			b.laterHashes[j] = driver.PayloadHash(e.Payload)
			if len(e.Payload) > 0 {
				b.laterPayloads[j] = e.Payload
			}
		}
	}
	return b
}

// index returns the position in the batch of the event of an ordinal that
// the append statement returned.
func (b *appendBatch) index(ord int64) (int, bool) {
	switch n := int64(len(b.first)); {
	case ord >= 1 && ord <= n:
		return b.first[ord-1], true
	case ord > n && ord <= n+int64(len(b.later)):
		return b.later[ord-n-1], true
	}
	return 0, false
}

// fail turns an error of the pool into ErrClosed after Close, and names the
// context's error when ctx ended.
func (s *Store) fail(ctx context.Context, err error) error {
	if s.closed.Load() {
		return fmt.Errorf("%w (%w)", eventagg.ErrClosed, err)
	}
	if errors.Is(context.Cause(ctx), ErrNoAnswer) {
		return fmt.Errorf("%w (%w)", ErrNoAnswer, err)
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// Events implements [eventagg.Store.Events]. It reads pages of a few hundred
// events, each with its own query, so memory stays flat however many are
// listed and no connection is held while the caller consumes a page.
//
// An event is listed only once every event with a lower Seq is listable: a
// reader that pages with Query.After never skips an event stored later by
// another replica. See the package documentation. Events that left by
// [Store.Expire] are not listed; a Query.After at one of them lists from
// the next event still stored.
func (s *Store) Events(ctx context.Context, q eventagg.Query) iter.Seq2[eventagg.Event, error] {
	return driver.Paginate(q, pageSize, func(dst []eventagg.Event, after int64, n int) ([]eventagg.Event, error) {
		return s.page(ctx, dst, q.Topic, after, n)
	})
}

// page appends to dst up to n events with a Seq above after, stopping once
// their payloads reach eventagg.PageBytes.
func (s *Store) page(ctx context.Context, dst []eventagg.Event, topic string, after int64, n int) ([]eventagg.Event, error) {
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	if s.closed.Load() {
		return dst, eventagg.ErrClosed
	}
	var (
		rows pgx.Rows
		err  error
	)
	if topic == "" {
		rows, err = s.pool.Query(ctx, s.listSQL, after, n)
	} else {
		rows, err = s.pool.Query(ctx, s.listTopicSQL, after, n, topic)
	}
	if err != nil {
		return dst, s.fail(ctx, err)
	}
	defer rows.Close()
	size := 0
	for size < eventagg.PageBytes && rows.Next() {
		var (
			e       eventagg.Event
			ns      int64
			payload []byte
		)
		if err := rows.Scan(&e.Seq, &e.Topic, &e.EventID, &ns, &e.Source, &payload); err != nil {
			return dst, err
		}
		e.Timestamp = driver.FromNanos(ns)
		e.Payload = payload
		dst = append(dst, e)
		size += len(payload)
	}
	if err := rows.Err(); err != nil {
		return dst, s.fail(ctx, err)
	}
	return dst, nil
}

// Stats implements [eventagg.Store.Stats]: one query sums the counter shards
// of every topic. Stored is what was stored less what expired: in the
// snapshot the query reads, the number of events a listing would return.
func (s *Store) Stats(ctx context.Context) (eventagg.Stats, error) {
	if err := ctx.Err(); err != nil {
		return eventagg.Stats{}, err
	}
	if s.closed.Load() {
		return eventagg.Stats{}, eventagg.ErrClosed
	}
	rows, err := s.pool.Query(ctx, s.statsSQL)
	if err != nil {
		return eventagg.Stats{}, s.fail(ctx, err)
	}
	defer rows.Close()
	st := eventagg.Stats{Topics: make(map[string]eventagg.Counts)}
	for rows.Next() {
		var (
			topic string
			c     eventagg.Counts
		)
		if err := rows.Scan(&topic, &c.Received, &c.UniqueProcessed, &c.DuplicateDropped, &c.Conflicts, &c.Expired); err != nil {
			return eventagg.Stats{}, err
		}
		c.Stored = c.UniqueProcessed - c.Expired
		st.Topics[topic] = c
		st.Add(c)
	}
	if err := rows.Err(); err != nil {
		return eventagg.Stats{}, s.fail(ctx, err)
	}
	st.TopicCount = int64(len(st.Topics))
	return st, nil
}

// QueryStats implements [eventagg.StatsQuerier]: one query sums every
// topic's shards, totals them and returns the page q selects, so that only
// the page travels and is held in memory.
func (s *Store) QueryStats(ctx context.Context, q eventagg.StatsQuery) (eventagg.Stats, error) {
	if err := ctx.Err(); err != nil {
		return eventagg.Stats{}, err
	}
	if s.closed.Load() {
		return eventagg.Stats{}, eventagg.ErrClosed
	}
	rows, err := s.pool.Query(ctx, s.queryStatsSQL, q.TopicsAfter, max(q.TopicsLimit, 0))
	if err != nil {
		return eventagg.Stats{}, s.fail(ctx, err)
	}
	defer rows.Close()
	st := eventagg.Stats{Topics: make(map[string]eventagg.Counts, min(max(q.TopicsLimit, 0), 1024))}
	for rows.Next() {
		var (
			topic *string
			n     int64
			c     eventagg.Counts
		)
		if err := rows.Scan(&topic, &n, &c.Received, &c.UniqueProcessed, &c.DuplicateDropped, &c.Conflicts, &c.Expired); err != nil {
			return eventagg.Stats{}, err
		}
		c.Stored = c.UniqueProcessed - c.Expired
		if topic == nil {
			st.TopicCount, st.Counts = n, c
		} else {
			st.Topics[*topic] = c
		}
	}
	if err := rows.Err(); err != nil {
		return eventagg.Stats{}, s.fail(ctx, err)
	}
	return st, nil
}

// Ping implements [eventagg.Pinger]: it reads the schema version, which
// checks the connection and that the schema is still there.
// Returns ErrClosed after Close.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return eventagg.ErrClosed
	}
	var version int
	if err := s.pool.QueryRow(ctx, s.pingSQL).Scan(&version); err != nil {
		return s.fail(ctx, err)
	}
	if version != schemaVersion {
		return fmt.Errorf("postgres: schema %q is at version %d, this eventagg uses %d", s.schema, version, schemaVersion)
	}
	return nil
}

// Close waits for the operations under way, then closes every connection.
// A [Store.Watch] under way ends, returning ErrClosed, and closes its
// connection before Close returns. Calls after the first return nil.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.watchMu.Lock()
		s.closed.Store(true)
		s.watchMu.Unlock()
		s.stop()
		s.watches.Wait()
		s.pool.Close()
	})
	return nil
}
