package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/driver"
	"github.com/eventagg/eventagg/postgres"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"
)

// schemaV1 is the schema as version 1 of this package created it (its
// migrations[0], {schema} standing for the quoted schema name), kept here
// as it was so that the upgrade is tested on what that version wrote.
const schemaV1 = `
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
`

// createV1 creates schema as version 1 of this package left it after
// storing events (their payloads as published, NULL for none) and counting
// them over a few counter shards. It returns the events in Seq order, and
// the counters.
func createV1(t *testing.T, dsn, schema string) ([]eventagg.Event, map[string]eventagg.Counts) {
	t.Helper()
	q := pgx.Identifier{schema}.Sanitize()
	exec(t, dsn, `CREATE SCHEMA `+q+`;`+strings.ReplaceAll(schemaV1, "{schema}", q)+
		`;INSERT INTO `+q+`.eventagg_schema (version) VALUES (1)
			ON CONFLICT (id) DO UPDATE SET version = excluded.version`)
	old := []eventagg.Event{event("a", "1"), event("a", "2"), event("b", "1"), event("a", "none")}
	old[1].Source = "old-source"
	old[2].Timestamp = time.Unix(0, 1).UTC()
	old[3].Payload = nil
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for i := range old {
		e := &old[i]
		var payload []byte
		if len(e.Payload) > 0 {
			payload = e.Payload
		}
		err := conn.QueryRow(ctx, `INSERT INTO `+q+`.events (seq, topic, event_id, ts, source, payload)
			VALUES (nextval(`+quote(q+".events_seq")+`), $1, $2, $3, $4, $5) RETURNING seq`,
			e.Topic, e.EventID, e.Timestamp.UnixNano(), e.Source, payload).Scan(&e.Seq)
		if err != nil {
			t.Fatal(err)
		}
	}
	// Shards as several replicas with different CounterShards left them.
	for _, c := range []struct {
		topic             string
		shard             int32
		received, uniq, d int64
	}{{"a", 0, 4, 2, 2}, {"a", 5, 2, 1, 1}, {"b", 3, 3, 1, 2}} {
		if _, err := conn.Exec(ctx, `INSERT INTO `+q+`.counters (topic, shard, received, unique_processed, duplicate_dropped)
			VALUES ($1, $2, $3, $4, $5)`, c.topic, c.shard, c.received, c.uniq, c.d); err != nil {
			t.Fatal(err)
		}
	}
	return old, map[string]eventagg.Counts{
		"a": {Received: 6, UniqueProcessed: 3, DuplicateDropped: 3, Stored: 3},
		"b": {Received: 3, UniqueProcessed: 1, DuplicateDropped: 2, Stored: 1},
	}
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func TestMigrateFromVersion1(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	old, counters := createV1(t, dsn, schema)

	s := MustOpen(t, dsn, schema)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping() after the upgrade: %v", err)
	}
	if diff := cmp.Diff(old, listAll(t, s, eventagg.Query{})); diff != "" {
		t.Errorf("Events() after the upgrade (-stored by version 1 +listed):\n%s", diff)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := eventagg.Stats{Topics: counters, TopicCount: 2}
	for _, c := range counters {
		want.Add(c)
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("Stats() after the upgrade (-counted by version 1 +now):\n%s", diff)
	}
	for _, e := range old {
		if h := phash(t, dsn, schema, e.Key()); h != nil {
			t.Errorf("event %v stored by version 1 has phash %x after the upgrade, want NULL", e.Key(), h)
		}
	}

	// Events stored without a digest are compared by their payload bytes.
	a1, a2, b1, none := old[0], old[1], old[2], old[3]
	a1.Source, a1.Timestamp = "resent", time.Now() // only the payload is compared
	got := appendStatuses(t, s,
		a1, withPayload(a2, `{"id":"2" }`), b1, none, withPayload(none, `null`), event("a", "new"))
	if diff := cmp.Diff([]eventagg.Status{D, C, D, D, C, S}, got); diff != "" {
		t.Errorf("resending events stored by version 1 (-want +got):\n%s", diff)
	}
	// Later copies in the call: a conflict with the stored copy, then the
	// stored payload again, then the conflicting one again.
	got = appendStatuses(t, s, withPayload(a2, `{}`), a2, withPayload(a2, `{}`), withPayload(a2, `[]`), withPayload(a2, ""))
	if diff := cmp.Diff([]eventagg.Status{C, D, C, C, C}, got); diff != "" {
		t.Errorf("copies within a call of an event stored by version 1 (-want +got):\n%s", diff)
	}
	reject := eventagg.AppendOptions{RejectConflicts: true}
	_, err = s.Append(t.Context(), []eventagg.Event{old[0], old[2], withPayload(old[2], `1`)}, reject)
	var ce *eventagg.ConflictError
	if !errors.As(err, &ce) || ce.Index != 2 || ce.Key != old[2].Key() {
		t.Errorf("Append(conflict with an event stored by version 1, rejecting) error = %v, want a ConflictError for event 2", err)
	}

	if h := phash(t, dsn, schema, eventagg.Key{Topic: "a", EventID: "new"}); !bytes.Equal(h, driver.PayloadHash(event("a", "new").Payload)) {
		t.Errorf("event stored after the upgrade has phash %x, want the payload's digest", h)
	}
	st, err = s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	counters["a"] = eventagg.Counts{Received: 6 + 5 + 5, UniqueProcessed: 3 + 1, DuplicateDropped: 3 + 4 + 5, Conflicts: 2 + 4, Stored: 3 + 1}
	counters["b"] = eventagg.Counts{Received: 3 + 1, UniqueProcessed: 1, DuplicateDropped: 2 + 1, Stored: 1}
	if diff := cmp.Diff(counters, st.Topics); diff != "" {
		t.Errorf("Stats().Topics after the resends (-want +got):\n%s", diff)
	}
	s.Close()

	// Opening again finds the schema up to date.
	s = MustOpen(t, dsn, schema)
	if diff := cmp.Diff([]eventagg.Status{D, C}, appendStatuses(t, s, old[1], withPayload(old[1], `2`))); diff != "" {
		t.Errorf("after reopening (-want +got):\n%s", diff)
	}
}

// schemaV2 is what version 2 of this package added to schemaV1 (its
// migrations[1]), kept here as it was.
const schemaV2 = `
ALTER TABLE {schema}.events ADD COLUMN phash bytea;
ALTER TABLE {schema}.counters ADD COLUMN conflicts bigint NOT NULL DEFAULT 0;
`

// createV2 creates schema as version 2 of this package left it: events
// stored by version 1 (without a digest) and by version 2 (with one), and
// counters with conflicts over a few shards. It returns the events in Seq
// order, and the counters.
func createV2(t *testing.T, dsn, schema string) ([]eventagg.Event, map[string]eventagg.Counts) {
	t.Helper()
	q := pgx.Identifier{schema}.Sanitize()
	exec(t, dsn, `CREATE SCHEMA `+q+`;`+strings.ReplaceAll(schemaV1+schemaV2, "{schema}", q)+
		`;INSERT INTO `+q+`.eventagg_schema (version) VALUES (2)`)
	old := []eventagg.Event{event("a", "v1"), event("a", "1"), event("b", "1"), event("a", "none")}
	old[1].Source = "old-source"
	old[3].Payload = nil
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for i := range old {
		e := &old[i]
		var payload, hash []byte
		if len(e.Payload) > 0 {
			payload = e.Payload
		}
		if i > 0 { // the first was stored by version 1
			hash = driver.PayloadHash(e.Payload)
		}
		err := conn.QueryRow(ctx, `INSERT INTO `+q+`.events (seq, topic, event_id, ts, source, payload, phash)
			VALUES (nextval(`+quote(q+".events_seq")+`), $1, $2, $3, $4, $5, $6) RETURNING seq`,
			e.Topic, e.EventID, e.Timestamp.UnixNano(), e.Source, payload, hash).Scan(&e.Seq)
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		topic                string
		shard                int32
		received, uniq, d, c int64
	}{{"a", 0, 5, 2, 3, 1}, {"a", 7, 2, 1, 1, 1}, {"b", 3, 2, 1, 1, 0}} {
		if _, err := conn.Exec(ctx, `INSERT INTO `+q+`.counters (topic, shard, received, unique_processed, duplicate_dropped, conflicts)
			VALUES ($1, $2, $3, $4, $5, $6)`, c.topic, c.shard, c.received, c.uniq, c.d, c.c); err != nil {
			t.Fatal(err)
		}
	}
	return old, map[string]eventagg.Counts{
		"a": {Received: 7, UniqueProcessed: 3, DuplicateDropped: 4, Conflicts: 2, Stored: 3},
		"b": {Received: 2, UniqueProcessed: 1, DuplicateDropped: 1, Stored: 1},
	}
}

// query runs sql, which returns one row, on the test database and scans it into dst.
func query(t *testing.T, dsn, sql string, dst ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, sql).Scan(dst...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestMigrateFromVersion2(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	q := pgx.Identifier{schema}.Sanitize()
	old, counters := createV2(t, dsn, schema)
	// The files of the tables: a rewrite would give them new ones.
	files := `SELECT array_agg(relfilenode::int8 ORDER BY relname) FROM pg_class
		WHERE relnamespace = ` + quote(q) + `::regnamespace AND relname IN ('events', 'counters')`
	var filesBefore, filesAfter []int64
	query(t, dsn, files, &filesBefore)

	before := time.Now()
	s := MustOpen(t, dsn, schema)
	upgraded := time.Now()
	query(t, dsn, files, &filesAfter)
	if diff := cmp.Diff(filesBefore, filesAfter); diff != "" {
		t.Errorf("the upgrade rewrote the events or counters table (-before +after):\n%s", diff)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping() after the upgrade: %v", err)
	}
	if diff := cmp.Diff(old, listAll(t, s, eventagg.Query{})); diff != "" {
		t.Errorf("Events() after the upgrade (-stored by version 2 +listed):\n%s", diff)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := eventagg.Stats{Topics: counters, TopicCount: 2}
	for _, c := range counters {
		want.Add(c)
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("Stats() after the upgrade (-counted by version 2 +now):\n%s", diff)
	}
	// The events stored before were accepted at the time of the upgrade
	// (the server's clock: the same machine's, to within its rounding).
	var lo, hi int64
	query(t, dsn, `SELECT min(accepted), max(accepted) FROM `+q+`.events`, &lo, &hi)
	if lo != hi || lo < before.Add(-time.Second).UnixNano() || lo > upgraded.Add(time.Second).UnixNano() {
		t.Errorf("accepted of the events stored before the upgrade: %v to %v, want one time between %v and %v",
			time.Unix(0, lo), time.Unix(0, hi), before, upgraded)
	}
	// A replica of version 2 still running inserts without accepted: the
	// column's default is then the time of the insert, not of the upgrade.
	time.Sleep(50 * time.Millisecond)
	exec(t, dsn, `INSERT INTO `+q+`.events (seq, topic, event_id, ts, source, payload, phash)
		VALUES (nextval(`+quote(q+".events_seq")+`), 'b', 'by-v2', 1, '', NULL, $1)`, driver.PayloadHash(nil))
	exec(t, dsn, `UPDATE `+q+`.counters SET received = received + 1, unique_processed = unique_processed + 1
		WHERE topic = 'b' AND shard = 3`)
	var byV2 int64
	query(t, dsn, `SELECT accepted FROM `+q+`.events WHERE event_id = 'by-v2'`, &byV2)
	if byV2 < lo+int64(40*time.Millisecond) || byV2 > time.Now().Add(time.Second).UnixNano() {
		t.Errorf("accepted of an event inserted by a replica of version 2 = %v, want about now, after the upgrade at %v",
			time.Unix(0, byV2), time.Unix(0, lo))
	}

	// Every event leaves; the keys stay, those stored without a digest
	// (by version 1) get one, and judge the copies sent again.
	x := eventagg.Expirer(s)
	res, err := x.Expire(t.Context(), eventagg.ExpireQuery{PayloadsBefore: time.Now().Add(time.Hour), KeysBefore: before.Add(-time.Hour), Limit: 100})
	if err != nil || res != (eventagg.ExpireResult{Events: 5}) {
		t.Fatalf("Expire(every event, keeping the keys) = %+v, %v; want 5 events, no key", res, err)
	}
	if got := listAll(t, s, eventagg.Query{}); len(got) != 0 {
		t.Errorf("Events() after every event left = %d events, want none", len(got))
	}
	if h := phash(t, dsn, schema, old[0].Key()); !bytes.Equal(h, driver.PayloadHash(old[0].Payload)) {
		t.Errorf("kept key of an event stored by version 1 has phash %x, want the digest of its payload", h)
	}
	a0, a1, b1, none := old[0], old[1], old[2], old[3]
	a0.Source = "resent" // only the payload is compared
	got := appendStatuses(t, s, a0, withPayload(old[0], `{}`), a1, b1, withPayload(b1, `2`), none, withPayload(none, `null`))
	if diff := cmp.Diff([]eventagg.Status{D, C, D, D, C, D, C}, got); diff != "" {
		t.Errorf("copies of the kept keys (-want +got):\n%s", diff)
	}
	st, err = s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	counters["a"] = eventagg.Counts{Received: 7 + 5, UniqueProcessed: 3, DuplicateDropped: 4 + 5, Conflicts: 2 + 2, Expired: 3}
	counters["b"] = eventagg.Counts{Received: 2 + 1 + 2, UniqueProcessed: 1 + 1, DuplicateDropped: 1 + 2, Conflicts: 1, Expired: 2}
	if diff := cmp.Diff(counters, st.Topics); diff != "" {
		t.Errorf("Stats().Topics after expiry and resends (-want +got):\n%s", diff)
	}

	// Then the keys leave too, and a copy is new.
	res, err = x.Expire(t.Context(), eventagg.ExpireQuery{PayloadsBefore: time.Now().Add(time.Hour), Limit: 100})
	if err != nil || res != (eventagg.ExpireResult{Keys: 5}) {
		t.Fatalf("Expire(every key) = %+v, %v; want 5 keys", res, err)
	}
	if diff := cmp.Diff([]eventagg.Status{S}, appendStatuses(t, s, old[0])); diff != "" {
		t.Errorf("a copy after its key left (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]eventagg.Event{old[0]}, listAll(t, s, eventagg.Query{}), cmpopts.IgnoreFields(eventagg.Event{}, "Seq")); diff != "" {
		t.Errorf("Events() at the end (-want +got):\n%s", diff)
	}
}

// schemaV3 is what version 3 of this package added to schemaV2 (its
// migrations[2]), kept here as it was.
const schemaV3 = `
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
`

// createV3 creates schema as version 3 of this package left it: the
// events and counters of createV2, upgraded, and an event stored by
// version 3 with its acceptance time. It returns the events in Seq order,
// and the counters.
func createV3(t *testing.T, dsn, schema string) ([]eventagg.Event, map[string]eventagg.Counts) {
	t.Helper()
	q := pgx.Identifier{schema}.Sanitize()
	old, counters := createV2(t, dsn, schema)
	exec(t, dsn, strings.ReplaceAll(schemaV3, "{schema}", q)+`;UPDATE `+q+`.eventagg_schema SET version = 3`)
	e := event("b", "v3")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `INSERT INTO `+q+`.events (seq, topic, event_id, ts, source, payload, phash, accepted)
		VALUES (nextval(`+quote(q+".events_seq")+`), $1, $2, $3, '', $4, $5, $6) RETURNING seq`,
		e.Topic, e.EventID, e.Timestamp.UnixNano(), []byte(e.Payload), driver.PayloadHash(e.Payload), time.Now().UnixNano()).Scan(&e.Seq)
	if err != nil {
		t.Fatal(err)
	}
	exec(t, dsn, `UPDATE `+q+`.counters SET received = received + 1, unique_processed = unique_processed + 1
		WHERE topic = 'b' AND shard = 3`)
	c := counters["b"]
	c.Received++
	c.UniqueProcessed++
	c.Stored++
	counters["b"] = c
	return append(old, e), counters
}

func TestMigrateFromVersion3(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	q := pgx.Identifier{schema}.Sanitize()
	old, counters := createV3(t, dsn, schema)
	files := `SELECT array_agg(relfilenode::int8 ORDER BY relname) FROM pg_class
		WHERE relnamespace = ` + quote(q) + `::regnamespace AND relname IN ('events', 'counters', 'retention')`
	var filesBefore, filesAfter []int64
	query(t, dsn, files, &filesBefore)

	s := MustOpen(t, dsn, schema)
	query(t, dsn, files, &filesAfter)
	if diff := cmp.Diff(filesBefore, filesAfter); diff != "" {
		t.Errorf("the upgrade rewrote the events, counters or retention table (-before +after):\n%s", diff)
	}
	var version int
	query(t, dsn, `SELECT version FROM `+q+`.eventagg_schema`, &version)
	if version != 6 {
		t.Errorf("schema version after the upgrade = %d, want 6", version)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping() after the upgrade: %v", err)
	}
	if diff := cmp.Diff(old, listAll(t, s, eventagg.Query{})); diff != "" {
		t.Errorf("Events() after the upgrade (-stored by version 3 +listed):\n%s", diff)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := eventagg.Stats{Topics: counters, TopicCount: 2}
	for _, c := range counters {
		want.Add(c)
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("Stats() after the upgrade (-counted by version 3 +now):\n%s", diff)
	}

	// No claims yet; the keys stored before are done, others claimable.
	var c eventagg.Claimer = s
	now := time.Now()
	if cc, err := c.ClaimCounts(t.Context(), now); err != nil || cc != (eventagg.ClaimCounts{}) {
		t.Errorf("ClaimCounts() after the upgrade = %+v, %v; want none", cc, err)
	}
	for _, e := range old {
		if cl, err := c.Claim(t.Context(), e.Key(), time.Minute, now); err != nil || cl.Status != eventagg.Done {
			t.Errorf("Claim(%v, stored before the upgrade) = %+v, %v; want Done", e.Key(), cl, err)
		}
	}
	e := event("a", "new")
	cl, err := c.Claim(t.Context(), e.Key(), time.Minute, now)
	if err != nil || cl.Status != eventagg.Claimed || cl.Token != 1 {
		t.Fatalf("Claim(new key) = %+v, %v; want Claimed with the first token, 1", cl, err)
	}
	if o, err := c.Complete(t.Context(), cl, e, eventagg.AppendOptions{}); err != nil || o.Status != eventagg.Stored {
		t.Fatalf("Complete(%+v) = %+v, %v; want Stored", cl, o, err)
	}

	// The events leave, their keys kept: a claim of a kept key is done.
	x := eventagg.Expirer(s)
	res, err := x.Expire(t.Context(), eventagg.ExpireQuery{PayloadsBefore: time.Now().Add(time.Hour), KeysBefore: time.Unix(0, 0), Limit: 100})
	if err != nil || res != (eventagg.ExpireResult{Events: len(old) + 1}) {
		t.Fatalf("Expire(every event, keeping the keys) = %+v, %v; want %d events, no key", res, err, len(old)+1)
	}
	for _, k := range []eventagg.Key{old[0].Key(), old[len(old)-1].Key(), e.Key()} {
		if cl, err := c.Claim(t.Context(), k, time.Minute, now); err != nil || cl.Status != eventagg.Done {
			t.Errorf("Claim(%v, a kept key) = %+v, %v; want Done", k, cl, err)
		}
	}
	s.Close()

	// Opening again finds the schema up to date, and the tokens go on.
	s = MustOpen(t, dsn, schema)
	cl, err = s.Claim(t.Context(), eventagg.Key{Topic: "a", EventID: "newer"}, time.Minute, now)
	if err != nil || cl.Status != eventagg.Claimed || cl.Token <= 1 {
		t.Errorf("Claim after reopening = %+v, %v; want Claimed with a token above 1", cl, err)
	}
}

// TestMigrateFromVersion3OwnClaimsTable: a schema of version 3 may hold a
// table of its user's named like one of version 4 (claims); the upgrade
// then fails, naming it, and changes nothing.
func TestMigrateFromVersion3OwnClaimsTable(t *testing.T) {
	dsn := testDSN(t)
	schema := newSchema(t, dsn)
	q := pgx.Identifier{schema}.Sanitize()
	createV3(t, dsn, schema)
	exec(t, dsn, `CREATE TABLE `+q+`.claims (id int)`)
	_, err := postgres.Open(t.Context(), dsn, &postgres.Options{Schema: schema})
	if err == nil || !strings.Contains(err.Error(), "version 3 to 4") || !strings.Contains(err.Error(), `"claims"`) {
		t.Errorf("Open(version 3 holding a table claims) error = %v, want the failed upgrade to version 4, naming claims", err)
	}
	var version int
	query(t, dsn, `SELECT version FROM `+q+`.eventagg_schema`, &version)
	if version != 3 {
		t.Errorf("schema version after the failed upgrade = %d, want 3", version)
	}
}
