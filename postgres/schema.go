package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// schemaVersion is the version of the tables this package reads and writes.
const schemaVersion = 6

// migrations[v] moves a schema from version v to v+1. {schema} stands for the
// quoted schema name. Versions are recorded in the table eventagg_schema; add
// new steps at the end, never edit old ones.
var migrations = []string{
	0: `
CREATE TABLE {schema}.eventagg_schema (
	id      boolean PRIMARY KEY DEFAULT true CHECK (id),
	version integer NOT NULL
);
-- Append reserves a block of numbers per call with setval under the append
-- lock; the default CACHE 1 keeps the values in call order.
CREATE SEQUENCE {schema}.events_seq AS bigint;
CREATE TABLE {schema}.events (
	seq      bigint PRIMARY KEY,
	topic    text COLLATE "C" NOT NULL,
	event_id text COLLATE "C" NOT NULL,
	ts       bigint NOT NULL, -- nanoseconds since the Unix epoch
	source   text NOT NULL DEFAULT '',
	payload  bytea,           -- the JSON bytes as published; NULL for none
	UNIQUE (topic, event_id)
);
CREATE INDEX events_topic_seq ON {schema}.events (topic, seq);
CREATE TABLE {schema}.counters (
	topic             text COLLATE "C" NOT NULL,
	shard             integer NOT NULL,
	received          bigint NOT NULL,
	unique_processed  bigint NOT NULL,
	duplicate_dropped bigint NOT NULL,
	PRIMARY KEY (topic, shard)
);
`,
	// Conflicts: a later copy of a key whose payload differs from the stored
	// copy's. phash is the payload's digest (driver.PayloadHash; that of the
	// empty payload for none), which Append compares instead of the payload.
	// Events stored before version 2 have none and are compared by their
	// payload bytes; so are those that a replica of the previous version
	// stores while the others are upgraded, since it leaves phash NULL, and
	// the DEFAULT counts none of its duplicates as conflicts.
	1: `
ALTER TABLE {schema}.events ADD COLUMN phash bytea;
ALTER TABLE {schema}.counters ADD COLUMN conflicts bigint NOT NULL DEFAULT 0;
`,
	// Retention (see expire.go). accepted is when the store accepted the
	// event, in nanoseconds since the Unix epoch: the events stored before
	// get the time of the upgrade, a default that now() makes a constant of
	// the transaction, so that PostgreSQL records it in the catalog instead
	// of rewriting the table. Then the default becomes the time of each
	// insert, for the events that a replica of the previous version stores
	// while the others are upgraded. counters.expired counts the events that
	// left; retention holds the prefixes of the events that have left.
	2: `
ALTER TABLE {schema}.events ADD COLUMN accepted bigint NOT NULL
	DEFAULT (extract(epoch FROM now()) * 1000000)::bigint * 1000;
ALTER TABLE {schema}.events ALTER COLUMN accepted
	SET DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000;
ALTER TABLE {schema}.counters ADD COLUMN expired bigint NOT NULL DEFAULT 0;
CREATE TABLE {schema}.retention (
	id       boolean PRIMARY KEY DEFAULT true CHECK (id),
	payloads bigint NOT NULL, -- every event with a Seq up to it has left
	keys     bigint NOT NULL  -- every row with a Seq up to it is deleted
);
INSERT INTO {schema}.retention (payloads, keys) VALUES (0, 0);
`,
	// Claims (see claims.go): one row per key claimed and not yet completed
	// or released, live or lapsed, with its fencing token, drawn from
	// claims_seq, and the end of its lease in nanoseconds since the Unix
	// epoch; taken_over counts the claims of the row's key that were taken
	// over after their lease ran out, which the row's deletion adds to
	// claim_state.expired. The tables are new: nothing is rewritten.
	3: `
CREATE SEQUENCE {schema}.claims_seq AS bigint;
CREATE TABLE {schema}.claims (
	topic      text COLLATE "C" NOT NULL,
	event_id   text COLLATE "C" NOT NULL,
	token      bigint NOT NULL,
	expires    bigint NOT NULL,
	taken_over bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (topic, event_id)
);
CREATE TABLE {schema}.claim_state (
	id      boolean PRIMARY KEY DEFAULT true CHECK (id),
	expired bigint NOT NULL
);
INSERT INTO {schema}.claim_state (expired) VALUES (0);
`,
	// Parallel appends (see Append): an Append inserts its events with a
	// provisional, negative Seq, the negated next value of events_pending,
	// and numbers them from events_seq, under the append lock, once they
	// have committed. Nothing is rewritten. A replica of version 4 still
	// running keeps taking the lock for its whole Append and numbering its
	// events from events_seq under it, which stays correct alongside.
	4: `
CREATE SEQUENCE {schema}.events_pending AS bigint;
CREATE FUNCTION {schema}.append_race() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	RAISE EXCEPTION USING ERRCODE = 'EA001',
		MESSAGE = 'eventagg: a key of the batch was stored by another append meanwhile; the append is retried';
END
$$;
`,
	// Appends without the append lock's exclusive hold or a numbering (see
	// Append): they take the lock shared and draw their Seqs from
	// events_seq, and listings stop at a watermark (watermark.go). No table
	// changes. The version moves so that replicas of version 5 still
	// running, whose listings take the Seqs committed for a prefix, fail
	// their Ping, naming this version (and report unhealthy), rather than
	// serve listings that could pass an Append of this version in flight.
	// Their Appends stay correct alongside: they draw Seqs only under the
	// lock held exclusive, or provisional ones from events_pending, which
	// stays for them, as does append_race.
	5: `
COMMENT ON SEQUENCE {schema}.events_pending IS 'provisional Seqs of replicas of schema version 5; unused since version 6';
`,
}

// tables are the relations of the schema, checked when a schema holds no
// version table: their presence means the schema is someone else's.
var tables = []string{"eventagg_schema", "events_seq", "events", "counters", "retention",
	"claims_seq", "claims", "claim_state", "events_pending"}

// expand replaces {schema} in sql with the quoted schema name.
func (s *Store) expand(sql string) string {
	return strings.ReplaceAll(sql, "{schema}", s.quoted)
}

// migrate creates or upgrades the schema in one transaction, under the
// append lock, so that replicas opening at once migrate it once.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // no-op after Commit
	if enc := tx.Conn().PgConn().ParameterStatus("server_encoding"); enc != "UTF8" {
		return fmt.Errorf("database encoding is %s; eventagg needs UTF8", enc)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, s.lockKey); err != nil {
		return err
	}
	version, err := s.schemaVersion(ctx, tx)
	if err != nil {
		return err
	}
	if version > schemaVersion {
		return fmt.Errorf("schema version %d is newer than this eventagg supports (%d): upgrade eventagg",
			version, schemaVersion)
	}
	for v := version; v < schemaVersion; v++ {
		if _, err := tx.Exec(ctx, s.expand(migrations[v])); err != nil {
			return fmt.Errorf("migrate schema version %d to %d: %w", v, v+1, err)
		}
	}
	if version < schemaVersion {
		if _, err := tx.Exec(ctx, s.expand(`INSERT INTO {schema}.eventagg_schema (version) VALUES ($1)
			ON CONFLICT (id) DO UPDATE SET version = excluded.version`), schemaVersion); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// schemaVersion returns the version recorded in the schema, creating the
// schema if it does not exist, or 0 for a new schema.
func (s *Store) schemaVersion(ctx context.Context, tx pgx.Tx) (int, error) {
	var exists bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)`, s.schema).Scan(&exists)
	if err != nil {
		return 0, err
	}
	if !exists {
		// Checking first lets a role without CREATE on the database use a
		// schema made for it.
		_, err := tx.Exec(ctx, `CREATE SCHEMA `+s.quoted)
		return 0, err
	}
	var found []string
	err = tx.QueryRow(ctx, `SELECT coalesce(array_agg(c.relname::text ORDER BY c.relname), '{}')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = ANY ($2)`, s.schema, tables).Scan(&found)
	if err != nil {
		return 0, err
	}
	if len(found) == 0 {
		return 0, nil
	}
	if !slices.Contains(found, "eventagg_schema") {
		return 0, fmt.Errorf("not an eventagg schema: it holds %s but no eventagg_schema table",
			strings.Join(found, ", "))
	}
	var version int
	err = tx.QueryRow(ctx, s.expand(`SELECT version FROM {schema}.eventagg_schema`)).Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, errors.New("not an eventagg schema: its eventagg_schema table is empty")
	}
	if err != nil {
		return 0, err
	}
	return version, nil
}
