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
	// [DefaultCounterShards]. Each Append adds to one of them that no other
	// Append in flight holds, if there is one (see the package
	// documentation's Counters), and Stats sums them. More shards than
	// Appends in flight at once (an Aggregator runs one at a time) keep
	// them from waiting for each other's counter rows. Replicas may use
	// different values, and the value may change from one Open to the
	// next.
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
	lockKey int64         // the append lock: Appends take it shared, migrations exclusive
	writeTO time.Duration // Options.WriteTimeout; 0: none

	beginSQL, insertSQL, statusSQL, statusLaterSQL, fastSQL, fastLaterSQL string // see prepareSQL
	sampleSeqSQL, sampleHoldersSQL, watermarkSQL, readSampleSQL           string // see watermark.go
	leftoverSQL                                                           string
	notifySQL                                                             string
	listSQL, listTopicSQL, statsSQL, queryStatsSQL, pingSQL               string
	lockRetentionSQL, expireSQL                                           string
	claimSQL, claimCheckSQL, endClaimSQL, claimCountsSQL                  string // see claims.go
	channel                                                               string // see watch.go

	safe       atomic.Int64 // the highest watermark a listing or Expire found, once the WAL is flushed past its sample (see watermark.go)
	pendingMu  sync.Mutex
	pending    pendingFloor // a watermark found before the WAL was flushed past its sample
	expireSmp  *sample      // the sample the last Expire took, for the next to judge
	heldBack   atomic.Int64 // since when listings have been held back, in Unix nanoseconds; 0: they are not
	heldMu     sync.Mutex
	heldCtx    context.Context // cancelled when listings become held back (see heldSignal)
	heldCancel context.CancelFunc

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
		// An Append holds the append lock (shared) until it commits, and
		// listings wait for it; should its client vanish without closing
		// the connection, the server notices within about a minute, rolls
		// the transaction back and frees the lock.
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
	s.heldCtx, s.heldCancel = context.WithCancel(context.Background())
	s.prepareSQL()
	if err := s.migrateWaiting(ctx, o.ConnectTimeout); err != nil {
		pool.Close()
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("postgres: open schema %q: %w", o.Schema, err)
	}
	if err := s.numberLeftovers(ctx); err != nil {
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
	// An Append is one transaction (see the package documentation's
	// Append), run alongside every other Append of every replica. beginSQL
	// starts it: it takes the append lock shared, which only migrations
	// (and replicas of older versions, which take it exclusive) wait for,
	// and which tells listings that the Append may still commit (see
	// watermark.go); and it gives the transaction its ID before any
	// sequence number is drawn, for the same reason. Its set_config makes
	// PostgreSQL run the statements of the transaction with their generic
	// plans, made once per connection: with the default plan_cache_mode,
	// PostgreSQL would plan them afresh for every small batch (the generic
	// plan's estimate is for more events than that), which costs more
	// than running them. set_config with is_local true lasts until the end
	// of the transaction, as SET LOCAL does. Parameter: $1 the lock's key.
	s.beginSQL = `SELECT set_config('plan_cache_mode', 'force_generic_plan', true),
	pg_advisory_xact_lock_shared($1::int8), pg_current_xact_id()`

	// fastSQL (fastLaterSQL for batches with later copies of their keys)
	// is the statement of an Append's transaction when no other Append
	// races it for a key. One statement judges every event against the
	// stored copy of its key in the statement's snapshot (scalar
	// subqueries, in the unique index), gives each first copy of a new key
	// its Seq from events_seq, in the order of the batch, inserts them, in
	// key order, adds to the counters, as statusSQL describes, and
	// records whether it stored events, for notifySQL. A key that
	// another Append stored after the snapshot was taken makes the
	// statement fail with a unique violation of the keys (a plain insert
	// costs less than ON CONFLICT, which writes a record more per row to
	// the WAL; one that finds the key being inserted by an Append in flight
	// waits for it, as ON CONFLICT would). The transaction is rolled back,
	// and Append runs insertSQL and statusSQL instead, whose two snapshots
	// judge such a key right.
	//
	// Parameters: $1 the number of first copies, $2-$7 their columns as
	// insertSQL's, $8 RejectConflicts, $9 the counter shard, $10 the
	// acceptance time; fastLaterSQL also $11-$15, as statusLaterSQL's
	// $7-$11. It returns a first row (0, 0, 1), then, for the events that
	// are not duplicates, their ordinal, status and Seq (0 for a
	// conflict).
	const fastFirst = `WITH f AS MATERIALIZED (
	SELECT f.ord, f.topic, f.event_id, f.ts, f.source, f.payload, f.phash, f.status,
		CASE WHEN f.status = 0 THEN nextval({seq}) END AS seq
	FROM (SELECT f.*, coalesce((
			SELECT CASE WHEN ` + storedDigest + ` = f.phash THEN 1 ELSE 2 END
			FROM {schema}.events e WHERE e.topic = f.topic AND e.event_id = f.event_id), 0) AS status
		FROM unnest($2::text[], $3::text[], $4::int8[], $5::text[], $6::bytea[], $7::bytea[])
			WITH ORDINALITY AS f (topic, event_id, ts, source, payload, phash, ord) ORDER BY ord) f
)`
	fastWrite := countCTE(8, 9) + `, ins AS (
	INSERT INTO {schema}.events (seq, topic, event_id, ts, source, payload, phash, accepted)
	SELECT f.seq, f.topic, f.event_id, f.ts, f.source, f.payload, f.phash, $10::int8
	FROM f, rej WHERE f.status = 0 AND NOT rej.rejected ORDER BY f.topic, f.event_id
	RETURNING 1
), w AS MATERIALIZED (
	SELECT set_config('eventagg.stored', CASE WHEN (SELECT count(*) FROM ins) > 0 THEN 'on' ELSE 'off' END, false)
)
SELECT 0::int8, 0::int8, (SELECT count(*) FROM w)
UNION ALL
SELECT o.ord, o.status, CASE WHEN o.status = 0 THEN o.seq ELSE 0 END
FROM o, rej WHERE o.status = 2 OR o.status = 0 AND NOT rej.rejected`
	fast := func(sql string) string {
		return s.expand(strings.NewReplacer("{seq}", seq, "{shards}", strconv.Itoa(s.shards),
			"{shardkey}", strconv.Itoa(int(int32(uint32(s.lockKey)))),
			"{channel}", quoteLiteral(s.channel), "{schemaname}", quoteLiteral(s.schema)).Replace(sql))
	}
	s.fastSQL = fast(fastFirst + firstOnly + fastWrite)
	// notifySQL runs after the commit of an Append, in a transaction of
	// its own, and notifies the schema's channel if the Append stored
	// events (the append statements record it in the session's setting
	// eventagg.stored). PostgreSQL commits the transactions that notify
	// one at a time, in the whole cluster, holding a lock from before
	// their commit record is written until it is flushed: Appends that
	// notified in their own transaction would wait for each other's
	// flush, where their commits are flushed together otherwise. This
	// transaction writes nothing to the WAL, and holds that lock a moment.
	s.notifySQL = `SELECT pg_notify(` + quoteLiteral(s.channel) + `, ` + quoteLiteral(s.schema) + `)
	WHERE current_setting('eventagg.stored', true) = 'on'`
	s.fastLaterSQL = fast(fastFirst + laterCTE(11) + fastWrite)

	// insertSQL inserts the first copy of each key of a batch (driver.FirstInBatch)
	// unless the key is stored, in one statement. Parameters: $1-$6 the
	// columns of the first copies, phash being driver.PayloadHash of the
	// payload; $7 the acceptance time of the batch, in nanoseconds. Each
	// row gets its Seq from events_seq, drawn in the order of the batch
	// (a key found stored leaves its number unused). The rows are inserted in key
	// order: ON CONFLICT waits for a transaction that is inserting the same
	// key, and two Appends inserting their keys in the same order cannot
	// wait for each other in a cycle. A key stored by a transaction that
	// committed after the statement's snapshot was taken is not inserted
	// either (ON CONFLICT checks the index, not the snapshot): statusSQL,
	// with a newer snapshot, judges the copy against it.
	s.insertSQL = s.expand(`WITH f AS MATERIALIZED (
	SELECT nextval(` + seq + `) AS seq, f.topic, f.event_id, f.ts, f.source, f.payload, f.phash
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
	// The statement records whether it stored events for notifySQL. It
	// returns a first row (0, 0, 1), then, for the events
	// that are not duplicates, the ordinal of their row (first copies
	// 1..$1, later copies $1 + their ordinal), their status, and the Seq
	// of those stored (0 for a conflict).
	const first = `WITH f AS MATERIALIZED (
	SELECT f.ord, f.topic, f.event_id, NULL::int8 AS seq, coalesce((
		SELECT CASE
			WHEN e.xmin = pg_current_xact_id_if_assigned()::xid THEN 0
			WHEN ` + storedDigest + ` = f.phash THEN 1
			ELSE 2 END
		FROM {schema}.events e WHERE e.topic = f.topic AND e.event_id = f.event_id), 1) AS status
	FROM unnest($2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS f (topic, event_id, phash, ord)
)`
	const answer = `, nw AS MATERIALIZED (
	SELECT set_config('eventagg.stored', CASE WHEN EXISTS (SELECT FROM o, rej WHERE o.status = 0 AND NOT rej.rejected)
		THEN 'on' ELSE 'off' END, false)
)
SELECT 0::int8, 0::int8, (SELECT count(*) FROM nw)
UNION ALL
SELECT o.ord, o.status, CASE WHEN o.status = 0 THEN (
	SELECT e.seq FROM {schema}.events e WHERE e.topic = o.topic AND e.event_id = o.event_id) ELSE 0 END
FROM o, rej WHERE o.status = 2 OR o.status = 0 AND NOT rej.rejected`
	s.statusSQL = fast(first + firstOnly + countCTE(5, 6) + answer)
	s.statusLaterSQL = fast(first + laterCTE(7) + countCTE(5, 6) + answer)

	s.prepareWatermark(seq)
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
		"{shard}", strconv.Itoa(expireShard), "{watermark}", watermarkExpr(`greatest($4::int8, CASE WHEN `+flushedExpr(`$7::text::pg_lsn`)+` THEN $8::int8 ELSE 0 END)`, 5)).Replace(expireSQL))
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
	SELECT ord, topic, event_id, status, seq FROM f WHERE ord <= $1::int8
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
	SELECT $1::int8 + l.ord AS ord, l.topic, l.event_id, CASE
		WHEN l.same THEN CASE (SELECT fs.status[l.first] FROM fs) WHEN 2 THEN 2 ELSE 1 END
		ELSE coalesce((
			SELECT CASE WHEN ` + storedDigest + ` = l.phash THEN 1 ELSE 2 END
			FROM {schema}.events e WHERE e.topic = l.topic AND e.event_id = l.event_id), 2)
		END AS status
	FROM unnest($p0::text[], $p1::text[], $p2::int8[], $p3::bool[], $p4::bytea[])
		WITH ORDINALITY AS l (topic, event_id, first, same, phash, ord)
), o AS MATERIALIZED (
	SELECT ord, topic, event_id, status, seq FROM f UNION ALL SELECT ord, topic, event_id, status, NULL::int8 FROM l
)`)
}

// countCTE returns the CTEs sh, the counter shard of the Append, rej,
// true if parameter $reject (RejectConflicts) holds and a conflict is
// among the outcomes o, and cnt, which unless rej adds the outcomes to
// each topic's row of the shard, in topic order, so that two Appends of
// several topics take their counter rows in the same order.
//
// The shard is the first, from parameter $shard (drawn at random) on,
// whose advisory lock (two int4 keys: {shardkey}, the shard) the
// transaction gets without waiting, and holds until it ends: Appends at
// once take different shards, and do not wait for each other's counter
// rows, unless more of them run than there are shards; then it is $shard.
func countCTE(reject, shard int) string {
	return `, sh AS MATERIALIZED (
	SELECT coalesce((
		SELECT (p.p + i) % {shards} FROM (SELECT ` + param(shard) + `::int4 AS p) p, generate_series(0, {shards} - 1) i
		WHERE pg_try_advisory_xact_lock({shardkey}, (p.p + i) % {shards}) LIMIT 1), ` + param(shard) + `::int4) AS shard
), rej AS MATERIALIZED (
	SELECT ` + param(reject) + `::bool AND EXISTS (SELECT FROM o WHERE status = 2) AS rejected
), cnt AS (
	INSERT INTO {schema}.counters AS c (topic, shard, received, unique_processed, duplicate_dropped, conflicts)
	SELECT o.topic, (SELECT shard FROM sh), count(*), count(*) FILTER (WHERE status = 0), count(*) FILTER (WHERE status <> 0),
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

// Append implements [eventagg.Store.Append] in one transaction, in one
// round trip, alongside the Appends of every replica (see the package
// documentation's Append): it takes the schema's append lock shared, which
// no other Append waits for; judges every event of the batch against the
// stored copy of its key (comparing their payloads' digests); inserts the
// first copy of each key not stored yet, with its Seq from events_seq (a
// key that another Append stores meanwhile makes it judge the batch again,
// in two statements); adds to one counter shard of each topic; commits;
// and then notifies the schema's channel for [Store.Watch]. Append returns
// after PostgreSQL acknowledged the commit. With opts.RejectConflicts, a
// batch holding a conflict stores and counts nothing, and Append returns
// a [*eventagg.ConflictError].
//
// If the connection fails or ctx ends while the commit is in flight,
// Append returns an error although the batch may have been stored; see the
// package documentation.
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
	s.queueFast(&q, b, events, opts, outcomes)
	q.Queue("COMMIT")
	q.Queue(s.notifySQL)
	err = s.send(ctx, conn, &q)
	if !raced(err) {
		if err != nil {
			return nil, err
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
// queued after it, followed by the two statements of an Append of events
// (see queueStore), then commits. The transaction is rolled back instead
// if opts rejects a conflict, or if check, which runs once q's answers are
// in and may be nil, returns an error: storeSlow then returns that error.
// Only then does the commit take a round trip of its own.
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
	q.Queue(s.notifySQL)
	if err := s.send(ctx, conn, q); err != nil {
		return err
	}
	return numbered(outcomes)
}

// raced reports whether err is the failure of the fast statement when
// another Append stored a key of the batch after its snapshot was taken: a
// unique violation of the keys.
func raced(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "events_topic_event_id_key"
}

// finish returns the error of an Append whose transaction ran: a
// [*eventagg.ConflictError] if opts.RejectConflicts rejected the batch,
// and an error if an event stored has no Seq.
func (s *Store) finish(events []eventagg.Event, outcomes []eventagg.Outcome, opts eventagg.AppendOptions) error {
	if err := rejected(events, outcomes, opts); err != nil {
		return err
	}
	return numbered(outcomes)
}

// queueFast queues on q, after the caller's BEGIN, the statements of an
// Append's transaction on its fast path (beginSQL, fastSQL). Once q has
// run, outcomes holds the status of every event and the Seq of those
// stored.
func (s *Store) queueFast(q *pgx.Batch, b *appendBatch, events []eventagg.Event, opts eventagg.AppendOptions, outcomes []eventagg.Outcome) {
	accepted := s.startStore(q, outcomes, opts)
	sql, args := s.fastSQL, []any{int64(len(b.first)), b.topics, b.ids, b.ts, b.sources, b.payloads, b.hashes,
		opts.RejectConflicts, int32(rand.IntN(s.shards)), accepted}
	if len(b.later) > 0 {
		sql, args = s.fastLaterSQL, append(args, b.laterArgs()...)
	}
	q.Queue(sql, args...).Query(b.judge(outcomes))
}

// judge returns the reader of the rows of an append statement: for each
// event that is not a duplicate, its ordinal, status and Seq, after a
// first row of ordinal 0, which is skipped.
func (b *appendBatch) judge(outcomes []eventagg.Outcome) func(pgx.Rows) error {
	return func(rows pgx.Rows) error {
		for rows.Next() {
			var ord, status, seq int64
			if err := rows.Scan(&ord, &status, &seq); err != nil {
				return err
			}
			if ord == 0 {
				continue
			}
			if err := b.judged(outcomes, ord, status, seq); err != nil {
				return err
			}
		}
		return rows.Err()
	}
}

// startStore queues beginSQL, the first statement of an Append's
// transaction after BEGIN, and makes every outcome a duplicate until the
// statement that judges the batch says otherwise. It returns the batch's
// acceptance time, in nanoseconds.
func (s *Store) startStore(q *pgx.Batch, outcomes []eventagg.Outcome, opts eventagg.AppendOptions) int64 {
	for i := range outcomes {
		outcomes[i] = eventagg.Outcome{Status: eventagg.Duplicate}
	}
	q.Queue(s.beginSQL, s.lockKey)
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

// queueStore queues on q the statements of an Append of events, which
// must not be empty, up to its commit, after the caller's BEGIN: the
// insert of the new keys, and the statement that judges every event and
// counts them. Once q has run, outcomes, which has an entry per event,
// holds their statuses and the Seq of those stored. [Store.Complete]
// queues its own statement before.
func (s *Store) queueStore(q *pgx.Batch, b *appendBatch, events []eventagg.Event, opts eventagg.AppendOptions, outcomes []eventagg.Outcome) {
	accepted := s.startStore(q, outcomes, opts)
	q.Queue(s.insertSQL, b.topics, b.ids, b.ts, b.sources, b.payloads, b.hashes, accepted)
	sql, args := s.statusSQL, []any{int64(len(b.first)), b.topics, b.ids, b.hashes,
		opts.RejectConflicts, int32(rand.IntN(s.shards))}
	if len(b.later) > 0 {
		sql, args = s.statusLaterSQL, append(args, b.laterArgs()...)
	}
	q.Queue(sql, args...).Query(b.judge(outcomes))
}

// judged records in outcomes the status (0 stored, 2 conflict) and Seq
// that a statement returned for the event of ordinal ord of the batch.
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

// numbered returns an error if an outcome stored has no Seq, which would
// be a fault of the statements.
func numbered(outcomes []eventagg.Outcome) error {
	for i, o := range outcomes {
		if o.Status == eventagg.Stored && o.Seq <= 0 {
			return fmt.Errorf("postgres: event %d of the batch was stored without a Seq", i)
		}
	}
	return nil
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
