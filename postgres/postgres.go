package postgres

import (
	"bytes"
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
	// Appends to one schema run one at a time, so connections beyond a few
	// serve concurrent listings and Stats.
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
	lockKey int64         // advisory lock taken by Append and by migrations
	writeTO time.Duration // Options.WriteTimeout; 0: none

	lockSQL, appendSQL, appendLaterSQL, listSQL, listTopicSQL, statsSQL, queryStatsSQL, pingSQL string
	lockRetentionSQL, expireSQL                                                                 string
	claimSQL, claimCheckSQL, endClaimSQL, claimCountsSQL                                        string // see claims.go
	channel, notifySQL                                                                          string // see watch.go

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
	// Append relies on each statement of its transaction taking a fresh
	// snapshot, after the append lock is held.
	params["default_transaction_isolation"] = "read committed"
	for name, value := range map[string]string{
		"application_name": "eventagg",
		// An Append holds the append lock until it commits; should its
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
	seq := quoteLiteral(s.quoted + ".events_seq")
	// lockSQL takes the append lock. It also makes PostgreSQL run the append
	// statement, next in the transaction, with its generic plan, made once
	// per connection: with the default plan_cache_mode, PostgreSQL would
	// plan it afresh for every small batch (the generic plan's estimate is
	// for more events than that), which costs more than running it.
	// set_config with is_local true lasts until the end of the transaction,
	// as SET LOCAL does.
	s.lockSQL = `SELECT pg_advisory_xact_lock($1), set_config('plan_cache_mode', 'force_generic_plan', true)`

	// The append statement decides the outcome of every event of a batch,
	// inserts the first copy of each new key and adds to the counters. It
	// runs after lockSQL in the same transaction, so that its snapshot,
	// taken at its start, holds every event committed before, and the block
	// of sequence numbers it reserves is above every number reserved by a
	// transaction that has not committed yet.
	//
	// Parameters: $1 the number of first copies of keys in the batch, $2-$7
	// their columns, phash being driver.PayloadHash of the payload;
	// $8 RejectConflicts; $9 the counter shard; $10 the acceptance time of
	// the batch, in nanoseconds. appendLaterSQL, for batches that hold later
	// copies of their keys, also takes $11-$16: their topic and event_id,
	// the ordinal (1-based) of the first copy of their key, whether their
	// payload is the first copy's (the caller compares them), and, when it
	// is not, their phash and payload. appendSQL, without them, is the
	// common case, and cheaper to run.
	//
	// A status is 0 for a new key, 1 for a duplicate, 2 for a conflict. f
	// gives each first copy its status from the stored copy of its key, if
	// any, looked up in the unique index one row at a time (a join could be
	// planned as a scan of every event). The statement's snapshot holds no
	// row that ins inserts. A stored copy without phash, stored before
	// schema version 2 or by a replica of that version, is compared by its
	// payload bytes. A kept key, whose event left (see expire.go), has no
	// payload but always a phash: it is judged by its digest, and a key
	// that left is not found, so its copy is new. A later copy with the
	// payload of its key's first copy has the first copy's status, but
	// duplicate for new; one with another payload is compared with the
	// stored copy, or else conflicts with the first copy, which is stored
	// now. o holds the status of every event. With $8, a conflict anywhere
	// makes rej true, and nothing is inserted or counted.
	//
	// ins inserts without ON CONFLICT: under the append lock no other Append
	// can have stored a key since f looked it up (a writer that does not take
	// the lock would make the statement fail with a unique violation), and
	// Expire only removes keys. A key that an Expire running alongside
	// removes after f looked it up was judged as it stood before: as if the
	// Append committed first.
	//
	// The statement returns, for the events that are not duplicates, the
	// ordinal of their row (first copies 1..$1, later copies $1 + their
	// ordinal) and the Seq they were stored with, 0 for a conflict.
	const (
		first = `WITH b AS MATERIALIZED (
	SELECT setval({seq}, nextval({seq}) + $1::int8 - 1) - $1::int8 AS base
), f AS MATERIALIZED (
	SELECT f.ord, f.topic, f.event_id, f.ts, f.source, f.payload, f.phash, coalesce((
		SELECT CASE WHEN CASE WHEN e.phash IS NULL THEN e.payload IS NOT DISTINCT FROM f.payload ELSE e.phash = f.phash END THEN 1 ELSE 2 END
		FROM {schema}.events e WHERE e.topic = f.topic AND e.event_id = f.event_id), 0) AS status
	FROM unnest($2::text[], $3::text[], $4::int8[], $5::text[], $6::bytea[], $7::bytea[])
		WITH ORDINALITY AS f (topic, event_id, ts, source, payload, phash, ord)
)`
		firstOnly = `, o AS NOT MATERIALIZED (
	SELECT ord, topic, status FROM f
)`
		later = `, fs AS MATERIALIZED (
	SELECT array_agg(status ORDER BY ord) AS status FROM f
), l AS MATERIALIZED (
	SELECT $1::int8 + l.ord AS ord, l.topic, CASE
		WHEN l.same THEN CASE (SELECT fs.status[l.first] FROM fs) WHEN 2 THEN 2 ELSE 1 END
		ELSE coalesce((
			SELECT CASE WHEN CASE WHEN e.phash IS NULL THEN e.payload IS NOT DISTINCT FROM l.payload ELSE e.phash = l.phash END THEN 1 ELSE 2 END
			FROM {schema}.events e WHERE e.topic = l.topic AND e.event_id = l.event_id), 2)
		END AS status
	FROM unnest($11::text[], $12::text[], $13::int8[], $14::bool[], $15::bytea[], $16::bytea[])
		WITH ORDINALITY AS l (topic, event_id, first, same, phash, payload, ord)
), o AS MATERIALIZED (
	SELECT ord, topic, status FROM f UNION ALL SELECT ord, topic, status FROM l
)`
		write = `, rej AS MATERIALIZED (
	SELECT $8::bool AND EXISTS (SELECT FROM o WHERE status = 2) AS rejected
), ins AS (
	INSERT INTO {schema}.events (seq, topic, event_id, ts, source, payload, phash, accepted)
	SELECT b.base + f.ord, f.topic, f.event_id, f.ts, f.source, f.payload, f.phash, $10::int8
	FROM b, f, rej WHERE f.status = 0 AND NOT rej.rejected
), cnt AS (
	INSERT INTO {schema}.counters AS c (topic, shard, received, unique_processed, duplicate_dropped, conflicts)
	SELECT o.topic, $9::int4, count(*), count(*) FILTER (WHERE status = 0), count(*) FILTER (WHERE status <> 0),
		count(*) FILTER (WHERE status = 2)
	FROM o, rej WHERE NOT rej.rejected GROUP BY o.topic
	ON CONFLICT (topic, shard) DO UPDATE SET
		received = c.received + excluded.received,
		unique_processed = c.unique_processed + excluded.unique_processed,
		duplicate_dropped = c.duplicate_dropped + excluded.duplicate_dropped,
		conflicts = c.conflicts + excluded.conflicts
)
SELECT o.ord, CASE WHEN o.status = 0 THEN b.base + o.ord ELSE 0 END FROM o, b, rej
WHERE o.status = 2 OR o.status = 0 AND NOT rej.rejected`
	)
	expand := func(sql string) string { return s.expand(strings.ReplaceAll(sql, "{seq}", seq)) }
	s.appendSQL = expand(first + firstOnly + write)
	s.appendLaterSQL = expand(first + later + write)
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
	s.prepareNotify(seq)
	s.prepareClaims()
}

// Schema returns the name of the schema that holds the store's tables.
func (s *Store) Schema() string { return s.schema }

// Append implements [eventagg.Store.Append] in one transaction and one round
// trip: it takes the schema's append lock, then one statement finds which
// keys of the batch are stored already (kept keys of events that left
// included) and compares their payloads' digests, inserts the first copy
// of each new key with its acceptance time (opts.AcceptedAt, or now), and
// adds to one counter shard of each topic; if it stored events, it notifies
// the schema's channel for [Store.Watch]; the transaction commits. It returns after PostgreSQL
// acknowledged the commit. With opts.RejectConflicts, a batch holding a
// conflict commits without having stored or counted anything, and Append
// returns a [*eventagg.ConflictError].
//
// If the connection fails or ctx ends while the commit is in flight, Append
// returns an error although the batch may have been stored; see the package
// documentation.
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
	var q pgx.Batch
	s.queueAppend(&q, events, opts, outcomes)
	// Without BEGIN, the batch runs as one implicit transaction that commits
	// at its end; Close returns when the commit is acknowledged.
	if err := s.pool.SendBatch(ctx, &q).Close(); err != nil {
		return nil, s.fail(ctx, err)
	}
	if err := rejected(events, outcomes, opts); err != nil {
		return nil, err
	}
	return outcomes, nil
}

// queueAppend queues on q the statements of an Append of events, which
// must not be empty: the append lock, the append statement, and the
// notification of followers. Once q has run, outcomes, which has an entry
// per event, holds their outcomes. [Store.Append] runs q as a transaction
// of its own; [Store.Complete] in the transaction that ends its claim.
func (s *Store) queueAppend(q *pgx.Batch, events []eventagg.Event, opts eventagg.AppendOptions, outcomes []eventagg.Outcome) {
	for i := range outcomes {
		outcomes[i].Status = eventagg.Duplicate // unless the statement returns its row
	}
	b := newAppendBatch(events)
	accepted := opts.AcceptedAt
	if accepted.IsZero() {
		accepted = time.Now()
	}
	sql, args := s.appendSQL, []any{int64(len(b.first)), b.topics, b.ids, b.ts, b.sources, b.payloads, b.hashes,
		opts.RejectConflicts, int32(rand.IntN(s.shards)), nanos(accepted)}
	if len(b.later) > 0 {
		sql = s.appendLaterSQL
		args = append(args, b.laterTopics, b.laterIDs, b.laterFirst, b.laterSame, b.laterHashes, b.laterPayloads)
	}
	q.Queue(s.lockSQL, s.lockKey)
	q.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var ord, seq int64
			if err := rows.Scan(&ord, &seq); err != nil {
				return err
			}
			i, ok := b.index(ord)
			if !ok {
				return fmt.Errorf("postgres: append returned ordinal %d of %d", ord, len(events))
			}
			if seq > 0 {
				outcomes[i] = eventagg.Outcome{Status: eventagg.Stored, Seq: seq}
			} else {
				outcomes[i].Status = eventagg.Conflict
			}
		}
		return rows.Err()
	})
	q.Queue(s.notifySQL, int64(len(b.first))) // delivered at commit, if it stored events
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
