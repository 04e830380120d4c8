// Package postgres is an [eventagg.Store] in PostgreSQL, for several stateless
// eventagg replicas that share one database.
//
// Every replica opens a [Store] on the same database and schema and gives it
// to [eventagg.New]. Deduplication is exact across replicas: a key is stored
// once, whichever replica receives it first, and the counters are global.
//
//	store, err := postgres.Open(ctx, "postgres://eventagg@db:5432/events", nil)
//	if err != nil { ... }
//	defer store.Close()
//	agg, err := eventagg.New(store, nil)
//	if err != nil { ... }
//	defer agg.Close() // before store.Close: it drains the queue into the store
//
// It uses github.com/jackc/pgx/v5 and its pool, pgxpool. It needs PostgreSQL
// 12 or later, and is tested on 15.
//
// # Connecting
//
// The DSN is a URL or a keyword/value string, as [pgxpool.ParseConfig] reads it:
//
//	postgres://user:password@host:5432/dbname?sslmode=verify-full
//	host=/var/run/postgresql dbname=events
//
// The PG* environment variables (PGHOST, PGPASSWORD, ...) fill in what the DSN
// leaves out, and pool settings such as pool_max_conns may be given in it;
// [Options].MaxConns overrides the latter. Sessions run at the read committed
// isolation level. Unless the DSN sets them, they are named "eventagg" in
// pg_stat_activity (application_name), and ask the server to probe an idle
// TCP connection after 30s, so that the server drops a vanished client, and
// rolls back the Append it may have in flight, within about a minute
// (tcp_keepalives_idle=30, tcp_keepalives_interval=10, tcp_keepalives_count=3).
// Each attempt to open a connection gives up after the DSN's connect_timeout,
// or 10s if it sets none. The database encoding must be UTF8.
//
// # Schema
//
// The tables live in a PostgreSQL schema of their own, [DefaultSchema] unless
// [Options].Schema names another; Open creates it if it does not exist, so a
// role without CREATE on the database needs it made beforehand:
//
//	eventagg_schema   the schema version, one row
//	events            seq, topic, event_id, ts, source, payload, phash, accepted
//	events_seq        the sequence that numbers events
//	events_pending    the sequence of the provisional numbers of replicas of schema version 5 (see Upgrading)
//	counters          received, unique_processed, duplicate_dropped, conflicts, expired per (topic, shard)
//	retention         payloads, keys: the prefixes of the events that have left, one row
//	claims            topic, event_id, token, expires, taken_over: the claims held or lapsed (see Claims)
//	claims_seq        the sequence that draws the claims' fencing tokens
//	claim_state       expired: the claims taken over after their lease ran out, one row
//
// Topic and EventID are text in the "C" collation, so keys are compared byte
// for byte. The timestamp is a bigint of nanoseconds since the Unix epoch
// (timestamptz keeps only microseconds); to_timestamp(ts / 1e9) reads it.
// The payload is bytea, holding the JSON exactly as published (jsonb would
// rewrite it), or NULL for none. phash is the payload's digest
// ([driver.PayloadHash]: the first 16 bytes of its SHA-256, that of the
// empty payload for none), by which a later copy of the key is compared.
// accepted is when the store accepted the event
// ([eventagg.AppendOptions].AcceptedAt, or the clock of the replica's
// process), in nanoseconds since the Unix epoch: retention counts from it.
//
// Open creates and upgrades the schema in one transaction, holding the
// schema's advisory lock (pg_advisory_xact_lock on a 64-bit key hashed from
// the schema name), so that replicas starting at once migrate it once. It
// records the schema version and refuses a schema written by a newer
// eventagg, or one holding an events, counters, events_seq, retention,
// claims, claims_seq, claim_state or events_pending relation but no
// eventagg version.
// Other tables may share the schema.
//
// # Upgrading from schema version 1
//
// Schema version 2 adds events.phash and counters.conflicts. The first Open
// by this version adds both columns without rewriting a row, so it takes a
// moment whatever the size of the tables, though it waits for the queries
// under way on them (ALTER TABLE locks them). Events stored before have no
// digest (phash is NULL) and are compared by their payload bytes instead;
// the counters keep their values, with no conflicts counted.
//
// Replicas of the previous version that are still running keep appending
// and listing: the events they store have no digest either, and the
// duplicates they count are not counted as conflicts. Their Ping fails,
// naming the newer schema version, and they cannot Open the schema again,
// so upgrade every replica.
//
// # Upgrading from schema version 2
//
// Schema version 3 adds events.accepted, counters.expired and the
// retention table (see Retention). The first Open by this version adds
// the columns without rewriting a row: accepted gets, for the events
// stored before, the time of the upgrade (a default of now(), which is
// constant within the transaction, so PostgreSQL records the value in its
// catalog instead of writing it into every row); then the column's
// default becomes the time of each insert. As with version 2, the upgrade
// takes a moment whatever the size of the tables, but waits for the
// queries under way on them. The events stored before leave a window
// after the upgrade, the counters keep their values, with none expired.
//
// Replicas of version 2 still running keep appending, their events
// accepted when inserted, and judge a copy of a kept key by its digest.
// But they do not know of retention: they list the kept keys of events
// that left as events without payload, and count no expired events in
// Stats. Upgrade every replica before enabling retention.
//
// # Upgrading from schema version 3
//
// Schema version 4 adds the claims and claim_state tables and the
// claims_seq sequence (see Claims); the tables of version 3 are left as
// they are, so the upgrade takes a moment whatever their size, and waits
// for no query on them. A table, sequence or other relation of the schema's user
// named claims, claims_seq or claim_state makes the upgrade fail, naming
// it, with nothing changed: rename it first.
//
// Replicas of version 3 still running keep appending and listing, and
// their events are Done for the claims of the others; they hold no
// claims themselves. Their Ping fails, naming the newer schema version.
//
// # Upgrading from schema version 4
//
// Schema version 5 let Appends run in parallel. It added the sequence
// events_pending and the function append_race; nothing is rewritten, and
// the upgrade waits for no query. Replicas of version 4 still running keep
// working alongside: they take the append lock exclusive for their whole
// Append and draw their Seqs under it, which no Append of a later version
// overlaps (see Append); their Ping fails, naming the newer schema
// version. While they run, an Append of theirs that races an Append of a
// later version on the same key may fail with a unique violation (their
// insert has no ON CONFLICT); resending it is safe. Upgrade every replica.
//
// # Upgrading from schema version 5
//
// Schema version 6 changes no table: Appends no longer number their
// events in a second transaction, and listings stop at a watermark (see
// Listing order across replicas). The upgrade only records the version
// (and a comment on events_pending, which only replicas of version 5
// use), so that replicas of version 5 still running fail their Ping and
// report unhealthy: their listings take the committed Seqs for a prefix,
// which Appends of this version no longer make, and could pass an Append
// in flight. Their Appends stay correct alongside (they draw Seqs only
// under the append lock held exclusive, or provisional ones, numbered
// under it). Open numbers the events a replica of version 5 left with a
// provisional Seq, under the lock. Upgrade every replica.
//
// # Append
//
// Appends from every replica run side by side: no Append waits for
// another's lock, deduplication stays exact (the unique index of the
// keys), and the counters exact (each Append adds to one of a topic's
// counter shards). An Append is one transaction in one round trip, a
// pipeline of BEGIN, two statements, COMMIT and the notification:
//
//  1. The first takes the schema's append lock shared
//     (pg_advisory_xact_lock_shared on a 64-bit key hashed from the
//     schema name), which no other Append waits for, only a migration
//     (which takes it exclusive), and gets the transaction its ID
//     (pg_current_xact_id): listings rely on both (see Listing order
//     across replicas).
//  2. The second looks up, in the unique index, the stored copy of each
//     key of the batch (arrays passed with unnest), compares its digest
//     with the new copy's, gives each new key's first copy its Seq from
//     events_seq (nextval, in the order of the batch), inserts them with
//     the batch's acceptance time (in key order, so that two Appends
//     waiting for each other's keys cannot wait in a cycle), adds to the
//     counters, and returns the outcome and Seq of each event that is not
//     a duplicate.
//  3. After the commit, a transaction of its own notifies followers if
//     the Append stored events (see Following).
//
// A key that another Append stored after the second statement's snapshot
// was taken (the two inserting it at once) was judged new: the insert
// fails with a unique violation (once the other transaction commits, if it
// is still in flight).
// The transaction is rolled back and Append runs it again with the
// statement split in two, an insert that skips stored keys (ON CONFLICT
// DO NOTHING) and then, with a newer snapshot that holds the other
// Append's key, the judgement and the counting.
// [eventagg.AppendOptions].RejectConflicts costs that path a round trip,
// to roll back a batch holding a conflict.
//
// Every statement runs with its generic plan (plan_cache_mode is
// force_generic_plan for the transaction), planned once per connection.
//
// A later copy of a key within the batch ([driver.FirstInBatch]) is
// compared with the first copy before the batch is sent and, if it
// differs, with the stored copy too, by its digest: only the first copies'
// payloads travel. A later copy of a stored key is an [eventagg.Duplicate]
// if its payload has the stored copy's digest, and an [eventagg.Conflict]
// otherwise; the stored copy stays as it is. So is a copy of a key kept
// after its event left (see Retention); a copy of a key that left is
// stored as new. A stored copy without phash (stored before version 2) has
// the digest of its payload computed with sha256(). With
// [eventagg.AppendOptions].RejectConflicts, a batch that holds a conflict
// stores and counts nothing, and Append returns an [*eventagg.ConflictError]
// naming the first conflicting event.
//
// # Listing order across replicas
//
// [Store.Events] lists events by Seq, and a reader pages with Query.After.
// Appends draw their Seqs as they go and commit in any order: had an
// Append with Seq 10 still been in flight when one with Seq 11 committed,
// a reader could list 11, page on with After=11, and never see 10.
//
// So a listing shows the events up to a watermark only: a Seq below which
// no Append can still commit. Three statements, in one round trip (each
// statement takes a fresh snapshot):
//
//  1. read the last value events_seq gave out, v. Every Seq up to v was
//     drawn before, by an Append that held the append lock and had its
//     transaction ID by then;
//  2. read the transaction IDs of the append lock's holders (pg_locks):
//     the Appends that drew Seqs up to v are among them, or have ended;
//  3. list, in a later snapshot, up to v if none of those transactions is
//     in progress in it (pg_current_snapshot): each has then committed,
//     its events visible, or rolled back. If one is, the listing goes up
//     to the highest watermark found before (the floor). A watermark
//     becomes the floor only once the WAL is flushed past the sample:
//     were the server to crash before the sequence's record of a Seq
//     drawn by an Append that rolled back reached the disk, the sequence
//     would give that Seq out again, and a floor kept across the crash
//     could let a listing pass an Append holding it.
//
// A page that comes out short while held back (its watermark below v)
// runs its third statement again, after pauses from 200µs to 20ms, until
// the Appends in flight when it began have ended, or 1s has passed: a
// listing shows every event acknowledged before it began, unless an
// Append stays in flight longer than that (a held row lock, a stalled
// client). Then it returns the events up to the watermark, never past it,
// and the store reports itself held back ([Store.StoreMetrics]:
// eventagg_postgres_listings_held_back and _seconds) until a listing is
// not; meanwhile listings wait 20ms at most, and [Store.Watch] wakes its
// callers every 50ms. Hence a reader paging with After sees every event
// exactly once, in Seq order, whichever replica stored it
// (TestListingUnderConcurrentWriters: four replicas, writers out of step,
// commits delayed by 0 to 7ms, a transaction held open;
// TestListingsWaitForAppendsInFlight).
//
// The cursor stays a Seq. Only Appends of the schema hold listings back:
// not other transactions of the cluster, as a cursor on (transaction ID,
// position) filtered by the snapshot's xmin would (the way of Watermill's
// PostgreSQL adapter), where any long transaction anywhere, a report or a
// migration of another database, would hold back every listing. Nor does
// an Append write its rows twice, as a numbering of committed events
// (schema version 5) did. The price is the listing's: two small reads
// more (the sequence, and pg_locks, which copies the server's lock table
// under its locks and is read only if a Seq was drawn past the
// floor), and the wait for Appends in flight: a page of 100 events takes
// about 154 µs where version 5 took 103-109 µs (BenchmarkListPage).
//
// Sequence numbers have gaps: duplicates, rejected batches and failed Appends
// use up numbers too, and events that left leave theirs unused. They never
// go back: they come from events_seq, which removing events does not move.
//
// # Counters
//
// Each topic's counters are spread over [Options].CounterShards rows; each
// Append adds to one, in the same statement as it inserts its events: the
// first, from one drawn at random, whose advisory lock
// (pg_try_advisory_xact_lock with two int4 keys, a hash of the schema name
// and the shard) it gets without waiting, and holds to its commit; and
// [Store.Stats] sums them in one query. conflicts is a part
// of duplicate_dropped: received = unique_processed + duplicate_dropped
// holds in every row. Expire adds to expired in a row of its own per
// topic, shard -1, which no Append touches, so that Appends and Expires
// never wait for each other's counter rows. Stored is not kept: Stats
// computes it as unique_processed - expired: in the snapshot that one
// query reads, the number of events stored, which a listing returns once
// its watermark passes them (a moment later, for an event committed above
// an Append in flight). So concurrent Appends to one topic do not wait for
// each other's counter row while fewer run at once than there are shards;
// past that, an Append that finds every shard taken waits for the one it
// drew.
//
// # Retention
//
// [Store.Expire] implements [eventagg.Expirer]: an [eventagg.Aggregator]
// with a Retention calls it in chunks. Events leave in Seq order, so what
// has left is two prefixes of the events table, whose ends the one row of
// the retention table holds:
//
//   - payloads: every event with a Seq up to it has left. Listings start
//     after it (a cursor at an event that left goes on from the next), and
//     its events are counted in expired.
//   - keys: every row with a Seq up to it is deleted. The rows after it,
//     up to payloads, are the kept keys of events that left within a dedup
//     window ([eventagg.ExpireQuery].KeysBefore): their payload is NULL,
//     their source empty, and phash holds the digest of the payload (for
//     the rows stored before version 2, computed with sha256() when the
//     payload leaves), by which Append judges a later copy.
//
// Expire is one transaction and one round trip. Its first statements
// judge the watermark (see below); the next locks the retention row
// (SELECT ... FOR UPDATE), so that the Expires of every replica run one at
// a time. The last, with a snapshot taken once the lock is held, reads up
// to Limit kept keys and Limit events after the prefixes, oldest first,
// from the primary key; stops at the first that is not due (accepted at or
// after KeysBefore, or PayloadsBefore); deletes the rows of the keys that
// leave, kept keys and events alike, as one range of
// the primary key; keeps the key and digest of the other events that
// leave, as one range UPDATE; adds to the expired counters; and moves the
// prefixes.
//
// The rows deleted, and the old versions of the rows updated, are space
// that VACUUM makes reusable for the events stored next, so that at a
// constant rate and window the table stops growing once autovacuum keeps
// pace: it runs once the dead rows reach a fifth of the table
// (autovacuum_vacuum_scale_factor) and looks every minute; for a short
// window, a lower scale factor for the events table keeps the table
// closer to its live rows. Where autovacuum is off, run VACUUM on the
// events table every window or so. The table does not shrink on disk
// (VACUUM FULL or pg_repack give the space back, taking the table's lock).
//
// Expire does not take the append lock: Appends and Expires run side by
// side. An Expire and an Append never wait for each other's rows: an
// Append looks keys up without locking them and inserts only keys absent
// from its snapshot, which no Expire touches, and their counter rows
// differ. An Append that judged a copy by a key an Expire removes at the
// same time counts it as if it had committed first; an insert of a key that
// an Expire is removing waits for the Expire's transaction. Like a
// listing, an Expire removes no event above the watermark (see Listing
// order across replicas): an Append in flight may still commit events
// below the Seqs committed above it, and the prefixes, once passed, must
// gain no event (TestExpireStopsAtAppendsInFlight). It does not wait for
// the Appends in flight, as it runs on the Aggregator's writer: it judges
// the sample the previous Expire took, and so lags a call behind while
// other replicas append. Events
// with a provisional Seq (see Upgrading from schema version 5) are
// outside both prefixes, and leave only once numbered.
//
// Removing a chunk of 1000 events whose keys leave with them takes about 5
// ms on a machine with 2 CPUs (some 200,000 events/s), as does deleting 1000
// kept keys; keeping the keys of 1000 events takes about 20 ms, because
// PostgreSQL writes a new version of each row and, with full pages, new
// entries in its three indexes. With a dedup window, giving the events
// table room for updates in place (ALTER TABLE events SET (fillfactor =
// 70), for the pages written after it) makes that nearly twice as fast, at
// the cost of the room.
//
// # Following
//
// [Store.Watch] implements [eventagg.Watcher], so that the followers of
// every replica ([eventagg.Aggregator.Follow]) learn of the events any
// replica stores. Once an Append that stored events has committed, a
// transaction of its own, in the same round trip, notifies the channel
// "eventagg." followed by the schema name ("eventagg.#" and a hash of the
// name if that would pass 63 bytes), with the schema name as payload, so
// its events are committed by the time a follower hears of them; a
// listing then shows them once the Appends in flight below them end (see
// Listing order across replicas). An Append that stores nothing
// (duplicates only, a rejected conflict) does not notify.
//
// An Aggregator calls Watch once a follower waits. Watch listens on a
// connection of its own, outside the pool: a replica with followers uses
// one connection of the server more than [Options].MaxConns. While
// followers wait, the Aggregator also reads the store every
// [eventagg.WatchPoll] (2s), a safety net: the notifications sent while
// the connection is down are lost, not queued. Watch reconnects after a
// pause that grows from 100ms to 5s, and then wakes every follower to read
// what it may have missed; until then they see new events at the next
// poll. If it cannot reconnect within about 15s, Watch returns the error,
// which the Aggregator logs before calling it again. LISTEN needs a
// session of its own: through a pooler in transaction mode (PgBouncer's
// pool_mode=transaction), notifications do not arrive, and followers on
// other replicas see new events every 2s.
//
// PostgreSQL commits the transactions that notify one at a time, in the
// whole cluster (a lock held from just before each commit until after it
// is flushed). That is why an Append notifies after its commit, in a
// transaction that writes nothing to the WAL and holds that lock a moment:
// Appends notifying in their own transactions would wait for each other's
// flushes, where their commits are flushed together otherwise.
//
// # Claims
//
// [Store.Claim], [Store.Complete], [Store.Release] and [Store.ClaimCounts]
// implement [eventagg.Claimer], for the Aggregator's Claim, Complete,
// Release and Once, across replicas: of the concurrent claims of one key,
// from any replica, exactly one is Claimed. The claims table holds a row
// per key claimed and not yet completed or released, with its fencing
// token and the end of its lease (expires, nanoseconds since the Unix
// epoch, like accepted); a lapsed claim keeps its row until it is taken
// over, completed or released. Tokens come from claims_seq, so they grow
// across every key and every replica, and survive restarts. A Claim's
// lease is judged by the clock of the replica that claims (the now the
// Aggregator passes), so the replicas' clocks should agree to well within
// a lease.
//
// A Claim is a transaction of three round trips (BEGIN, two pipelined
// statements, COMMIT or ROLLBACK). Its first statement inserts the claim,
// unless the key is in the events table (stored, or a kept key of a dedup
// window: Done); if the key has a claim, it takes it over if its lease has
// ended, adding to the row's taken_over, and otherwise locks it until the
// transaction ends (Busy). INSERT ... ON CONFLICT waits for another
// transaction holding the key's row, a Claim or a Complete, and then
// judges the row as that left it. The second statement, with a snapshot
// taken after that wait, checks the events table again: a Complete that
// committed meanwhile makes the Claim Done, and it rolls back. Claims take
// no advisory lock: those of different keys never wait for each other.
//
// A Complete is an Append's transaction in two round trips: the first
// (BEGIN and one pipelined batch) deletes the claim if
// it still has the claimant's token (ErrClaimLost, and a rollback, if
// not), then inserts and judges the event as an Append's two-statement
// path does, so that it is stored, counted and judged a duplicate or a
// conflict exactly as an Append's; for a lost claim they run in vain, and
// are rolled back. The claim's row stays locked from its deletion to the
// commit: a Claim of the key meanwhile waits, and finds it Done. With
// RejectConflicts, a conflict rolls the transaction back, leaving the
// claim held. The second round trip commits, and notifies (see
// Append). A Complete returns once PostgreSQL acknowledged the commit,
// as an Append does (see Durability). A Release is one statement. The
// deletion of a claim adds its taken_over to the one row of claim_state,
// which only the ends of claims that were taken over write. ClaimCounts
// reads every row of claims: Active is the claims whose lease ends after
// now, Expired those whose lease has ended, those taken over and
// claim_state's count.
//
// # Durability
//
// Append returns after PostgreSQL acknowledged its commit. What a commit
// survives is PostgreSQL's to say: with synchronous_commit on (the default) it
// survives a crash of the database server, with synchronous standbys it is
// also on them, and with synchronous_commit off the last commits may be lost in
// a server crash, though events and counters still agree. This replaces
// [eventagg.SQLiteOptions].Sync.
//
// Unlike with SQLite, a commit can be in doubt: if the connection fails or ctx
// ends while the commit is in flight, Append returns an error although the
// batch may have been stored. The Aggregator then reports [eventagg.ErrStore]
// for a batch that may be stored; resending it is safe, its events are then
// counted as duplicates.
//
// # Outages
//
// A Store outlives a restart or crash of the database server. While the
// server is down, every operation fails: with a connection that the server
// closed, at once; with a new connection, once the attempt is refused or
// after its connect_timeout. An [eventagg.Aggregator] wraps these errors in
// [eventagg.ErrStore] (nothing of a failed Append is stored, unless its
// commit was in flight: see Durability) and its Ping fails, so that package
// httpapi answers publishes with 503 store_unavailable and Retry-After, and
// /health with 503. The pool replaces the connections lost, so that
// operations succeed again as soon as the server answers, without reopening
// the Store; nothing acknowledged is lost, since an acknowledged commit is
// PostgreSQL's to keep. [Store.Watch] reconnects too (see Following).
//
// Open, by contrast, fails if it cannot reach the server, unless
// [Options].ConnectTimeout gives it time to wait: replicas started with
// their database, or during its restart, then open once it answers.
// Authentication failures, a missing database and a schema it refuses
// return at once, whatever the timeout.
//
// TestPostgresRestartUnderLoad, in cmd/eventagg, stops and starts the real
// server, with a fast stop and as a crash, under publishes to two replicas;
// it runs alone in CI, with EVENTAGG_TEST_PG_RESTART=1.
//
// A server that stops answering on connections already open (hung, or cut
// off without a reset) would hold an Append in flight until the operating
// system gives up on the connection, which can take many minutes. So each
// Append and claim completion is bounded by Options.WriteTimeout (30s by
// default): past it, the write fails with [ErrNoAnswer], its connection is
// dropped and its commit is in doubt (resending is safe), and the next write
// uses a new connection (TestAppendGivesUpOnAServerThatDoesNotAnswer, through
// a proxy that stops forwarding). Reads are bounded by their caller's
// context, as a server's listing is by its write timeout.
//
// # Testing
//
// The tests read the DSN of a database from EVENTAGG_TEST_POSTGRES, work in
// schemas of their own and drop them. Without it they skip, unless CI is set.
package postgres
