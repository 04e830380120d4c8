package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"iter"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventagg/eventagg"
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
	// CounterShards is how many rows hold the counters of each topic; default
	// [DefaultCounterShards]. Each Append adds to one of them, chosen at random,
	// and Stats sums them. Replicas may use different values, and the value
	// may change from one Open to the next.
	CounterShards int
}

// pageSize is how many events a listing reads per query. Between pages the
// listing holds no connection.
const pageSize = 500

// Store is an [eventagg.Store] in a PostgreSQL schema, for one or several
// eventagg replicas that share the schema. It is safe for concurrent use.
//
// See the package documentation for the schema, the ordering of sequence
// numbers across replicas, and durability.
type Store struct {
	pool    *pgxpool.Pool
	schema  string // as given
	quoted  string // as an SQL identifier
	shards  int
	lockKey int64 // advisory lock taken by Append and by migrations

	appendSQL, listSQL, listTopicSQL, statsSQL, queryStatsSQL, pingSQL string

	closed atomic.Bool
	once   sync.Once
}

// Open connects to the PostgreSQL database named by dsn and returns a Store
// on opts.Schema, creating or upgrading the schema if needed. opts may be nil.
//
// dsn is a URL (postgres://user:password@host:5432/dbname?sslmode=require) or
// a keyword/value string (host=... dbname=...), as [pgxpool.ParseConfig]
// reads it; the PG* environment variables fill in what it leaves out.
// ctx bounds the connection and the migration, not the Store's life.
//
// Open fails if the database is unreachable, its encoding is not UTF8, the
// schema holds an events, counters or events_seq relation but no eventagg
// version, or the schema was written by a newer version of eventagg.
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
	if o.MaxConns < 0 {
		return nil, fmt.Errorf("postgres: negative MaxConns %d", o.MaxConns)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
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
		lockKey: lockKey(o.Schema),
	}
	s.prepareSQL()
	if err := s.migrate(ctx); err != nil {
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
	// appendSQL inserts the first copy of each key of a batch and adds to the
	// counters in one statement. It runs after pg_advisory_xact_lock(lockKey)
	// in the same transaction, so that the block of sequence numbers it
	// reserves is above every number reserved by a transaction that has not
	// committed yet. Parameters: $1 number of events, $2-$6 their columns,
	// $7 counter shard, $8-$9 events received per topic (in-batch copies
	// included). It returns the ordinals (1-based) of the events inserted.
	s.appendSQL = s.expand(`WITH b AS MATERIALIZED (
	SELECT setval(` + seq + `, nextval(` + seq + `) + $1::int8 - 1) - $1::int8 AS base
), ins AS (
	INSERT INTO {schema}.events (seq, topic, event_id, ts, source, payload)
	SELECT b.base + t.ord, t.topic, t.event_id, t.ts, t.source, t.payload
	FROM b, unnest($2::text[], $3::text[], $4::int8[], $5::text[], $6::bytea[])
		WITH ORDINALITY AS t (topic, event_id, ts, source, payload, ord)
	ON CONFLICT (topic, event_id) DO NOTHING
	RETURNING seq, topic
), cnt AS (
	INSERT INTO {schema}.counters AS c (topic, shard, received, unique_processed, duplicate_dropped)
	SELECT r.topic, $7::int4, r.received, coalesce(n.n, 0), r.received - coalesce(n.n, 0)
	FROM unnest($8::text[], $9::int8[]) AS r (topic, received)
	LEFT JOIN (SELECT topic, count(*) AS n FROM ins GROUP BY topic) AS n ON n.topic = r.topic
	ON CONFLICT (topic, shard) DO UPDATE SET
		received = c.received + excluded.received,
		unique_processed = c.unique_processed + excluded.unique_processed,
		duplicate_dropped = c.duplicate_dropped + excluded.duplicate_dropped
)
SELECT ins.seq - b.base FROM ins, b`)
	const cols = `SELECT seq, topic, event_id, ts, source, payload FROM {schema}.events `
	s.listSQL = s.expand(cols + `WHERE seq > $1 ORDER BY seq LIMIT $2`)
	s.listTopicSQL = s.expand(cols + `WHERE topic = $3 AND seq > $1 ORDER BY seq LIMIT $2`)
	s.statsSQL = s.expand(`SELECT topic, sum(received)::int8, sum(unique_processed)::int8,
	sum(duplicate_dropped)::int8 FROM {schema}.counters GROUP BY topic`)
	// The totals come first, with a NULL topic, then the page of topics.
	s.queryStatsSQL = s.expand(`WITH t AS (SELECT topic, sum(received)::int8 AS r, sum(unique_processed)::int8 AS u,
	sum(duplicate_dropped)::int8 AS d FROM {schema}.counters GROUP BY topic)
SELECT NULL::text, count(*)::int8, coalesce(sum(r), 0)::int8, coalesce(sum(u), 0)::int8, coalesce(sum(d), 0)::int8 FROM t
UNION ALL
(SELECT topic, 0, r, u, d FROM t WHERE topic > $1 ORDER BY topic LIMIT $2)`)
	s.pingSQL = s.expand(`SELECT version FROM {schema}.eventagg_schema`)
}

// Schema returns the name of the schema that holds the store's tables.
func (s *Store) Schema() string { return s.schema }

// Append implements [eventagg.Store.Append] in one transaction and one round
// trip: it takes the schema's append lock, inserts the first copy of each key
// with ON CONFLICT DO NOTHING, adds to one counter shard of each topic, and
// commits. It returns after PostgreSQL acknowledged the commit.
//
// If the connection fails or ctx ends while the commit is in flight, Append
// returns an error although the batch may have been stored; see the package
// documentation.
func (s *Store) Append(ctx context.Context, events []eventagg.Event) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, eventagg.ErrClosed
	}
	isNew := make([]bool, len(events))
	if len(events) == 0 {
		return isNew, nil
	}
	first := eventagg.FirstInBatch(events)
	var (
		index    []int // index[ord-1] is the position in events of the row of ordinal ord
		topics   []string
		ids      []string
		ts       []int64
		sources  []string
		payloads [][]byte
		received = make(map[string]int64, 1)
	)
	for i := range events {
		e := &events[i]
		received[e.Topic]++
		if !first[i] {
			continue
		}
		index = append(index, i)
		topics = append(topics, e.Topic)
		ids = append(ids, e.EventID)
		ts = append(ts, e.Timestamp.UnixNano())
		sources = append(sources, e.Source)
		var p []byte
		if len(e.Payload) > 0 {
			p = e.Payload
		}
		payloads = append(payloads, p)
	}
	counted := make([]string, 0, len(received))
	counts := make([]int64, 0, len(received))
	for topic, n := range received {
		counted = append(counted, topic)
		counts = append(counts, n)
	}

	var b pgx.Batch
	b.Queue(`SELECT pg_advisory_xact_lock($1)`, s.lockKey)
	b.Queue(s.appendSQL, int64(len(index)), topics, ids, ts, sources, payloads,
		int32(rand.IntN(s.shards)), counted, counts).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var ord int64
			if err := rows.Scan(&ord); err != nil {
				return err
			}
			if ord < 1 || ord > int64(len(index)) {
				return fmt.Errorf("postgres: insert returned ordinal %d of %d", ord, len(index))
			}
			isNew[index[ord-1]] = true
		}
		return rows.Err()
	})
	// Without BEGIN, the batch runs as one implicit transaction that commits
	// at its end; Close returns when the commit is acknowledged.
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return nil, s.fail(ctx, err)
	}
	return isNew, nil
}

// fail turns an error of the pool into ErrClosed after Close, and names the
// context's error when ctx ended.
func (s *Store) fail(ctx context.Context, err error) error {
	if s.closed.Load() {
		return fmt.Errorf("%w (%w)", eventagg.ErrClosed, err)
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
// another replica. See the package documentation.
func (s *Store) Events(ctx context.Context, q eventagg.Query) iter.Seq2[eventagg.Event, error] {
	return eventagg.Paginate(q, pageSize, func(dst []eventagg.Event, after int64, n int) ([]eventagg.Event, error) {
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
		e.Timestamp = time.Unix(0, ns).UTC()
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
// of every topic.
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
		if err := rows.Scan(&topic, &c.Received, &c.UniqueProcessed, &c.DuplicateDropped); err != nil {
			return eventagg.Stats{}, err
		}
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
		if err := rows.Scan(&topic, &n, &c.Received, &c.UniqueProcessed, &c.DuplicateDropped); err != nil {
			return eventagg.Stats{}, err
		}
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
// Calls after the first return nil.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.closed.Store(true)
		s.pool.Close()
	})
	return nil
}
