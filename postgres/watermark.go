package postgres

import (
	"context"
	"slices"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/driver"
	"github.com/jackc/pgx/v5"
)

// Listings never skip: the watermark.
//
// Appends run at once and draw their Seqs from events_seq as they go, so
// they commit out of the order of their Seqs: while an Append that drew
// 10 is in flight, one that drew 11 may commit. A listing that showed 11
// and moved its cursor past it would never show 10. So a listing shows
// only the events up to a watermark: a Seq below which no Append can
// still commit an event.
//
// A listing finds it in three statements, which run in one round trip
// (each statement of a batch takes a fresh snapshot, as the connection's
// isolation is read committed):
//
//  1. sampleSeqSQL reads v, the last value that events_seq gave out. Every
//     Seq up to v was drawn before, by an Append that then held the
//     append lock (shared) and had its transaction ID, as beginSQL takes
//     both before a number is drawn.
//  2. sampleHoldersSQL reads, after that, the transaction IDs of the
//     Appends that hold the append lock (pg_locks). Those that drew the
//     Seqs up to v are among them, or they ended before.
//  3. The listing statement, whose snapshot is later still, takes v as
//     its watermark if none of those transactions is in progress in its
//     snapshot (pg_current_snapshot): each has then committed or rolled
//     back, and its events are in the snapshot or never will be. If one
//     is, the watermark stays where an earlier listing left it (the
//     floor, safe). A watermark becomes the floor only once the WAL is
//     flushed past the sample (see floorExpr), so that no Seq up to it
//     can be given out again after a crash of the server.
//
// Samples 1 and 2 are kept in the connection's settings, which statement 3
// reads, so that the three need no round trip between them; statement 3
// returns them. When a page comes out short and held back (the watermark
// below v), the listing runs statement 3 again with the same sample, now
// passed as parameters, on any connection (none is held meanwhile), after
// pauses that grow from 200µs to 20ms, until the Appends that were in
// flight when it began have ended or listWait has passed: a listing shows
// every event acknowledged before it began unless an Append stays in
// flight longer than that. Then it returns what it may show, and the
// store counts itself held back (StoreMetrics) until a listing is not;
// meanwhile listings wait heldBackWait at most, and Watch wakes its
// callers every heldBackPoll, as no notification may come when the Append
// ends.
//
// Only Appends to the schema hold listings back: not other transactions of
// the cluster, as a filter on the snapshot's xmin would.
const (
	listWait     = time.Second
	heldBackWait = 20 * time.Millisecond // how long a listing waits while held back already
	heldBackPoll = 50 * time.Millisecond
)

// The settings that hold a listing's sample between its statements.
const (
	settingSeq     = "eventagg.sample_seq"
	settingHolders = "eventagg.sample_holders"
	settingLSN     = "eventagg.sample_lsn"
)

// sampleExprs returns the sampled Seq, holders and WAL position of a
// statement, from the parameters p, p+1 and p+2, or where they are NULL,
// the settings that sampleSeqSQL and sampleHoldersSQL, run before on the
// connection, left.
//
// The settings are read with missing_ok: the planner may evaluate them to
// estimate a generic plan's rows even where the parameter is given, on a
// connection that never ran the sample.
func sampleExprs(p int) (seq, holders, lsn string) {
	return `coalesce(` + param(p) + `::int8, current_setting('` + settingSeq + `', true)::int8)`,
		`coalesce(` + param(p+1) + `::int8[], current_setting('` + settingHolders + `', true)::int8[])`,
		`coalesce(` + param(p+2) + `::text, current_setting('` + settingLSN + `', true))::pg_lsn`
}

// watermarkExpr returns the watermark of a statement, given the sample
// (see sampleExprs): the sampled Seq if every Append that held the append
// lock then has ended in the statement's snapshot, or else floor (an SQL
// expression: the highest watermark found before), whichever is higher. A
// transaction ID of pg_locks has 32 bits; it is widened to the 64 of the
// snapshot's by the epoch of the snapshot's xmax, from which a
// transaction in progress is less than 2^31 IDs away.
// pg_visible_in_snapshot is false for an ID in progress, listed or at or
// above xmax.
func watermarkExpr(floor string, p int) string {
	seq, holders, _ := sampleExprs(p)
	return `CASE WHEN NOT EXISTS (
	SELECT FROM unnest(` + holders + `) h,
		(SELECT pg_current_snapshot() AS s, pg_snapshot_xmax(pg_current_snapshot())::text::int8 AS x) n
	WHERE h < 0 OR NOT pg_visible_in_snapshot(greatest(3, n.x - n.x % 4294967296 + h
		- CASE WHEN h - n.x % 4294967296 > 2147483648 THEN 4294967296 ELSE 0 END
		+ CASE WHEN n.x % 4294967296 - h > 2147483648 THEN 4294967296 ELSE 0 END)::text::xid8, n.s))
THEN greatest(` + seq + `, ` + floor + `) ELSE ` + floor + ` END`
}

// flushedExpr returns whether the WAL is flushed past the position lsn,
// an SQL expression of type pg_lsn (false if NULL).
//
// A watermark serves the statement that found it at once: the events it
// shows are committed, so their Seqs' sequence records are flushed. It
// becomes the floor only once the WAL is flushed past the position sampled
// after the Seq was read: had the server crashed before the sequence
// record of a Seq drawn by an Append that rolled back was flushed, the
// sequence would give that Seq out again after the restart, to an Append
// that could commit after a higher one, and a floor kept across the crash
// could let a listing pass it.
func flushedExpr(lsn string) string {
	return `coalesce(pg_current_wal_flush_lsn() >= ` + lsn + `, false)`
}

// pendingFloor is a watermark that becomes the floor once the WAL is
// flushed past lsn (see flushedExpr): a statement found it before the WAL
// was, and a later one checks. Until then the floor lags; the WAL writer
// flushes within wal_writer_delay (200ms by default), and every Append's
// commit does.
type pendingFloor struct {
	w   int64
	lsn string
}

// finding is what a statement that judges a sample returns (its first
// row): the watermark, the sample it judged, whether the WAL is flushed
// past the sample and past the pending floor it was given, pendingW.
type finding struct {
	w                       int64
	sample                  sample
	flushed, pendingFlushed bool
	pendingW                int64
}

// watermarkArgs returns the parameters $1-$5 of the statements that judge
// a sample (see watermarkCTE): the floor, sample p (nil: the one in the
// connection's settings) and the pending floor's position, which it
// records in f.
func (s *Store) watermarkArgs(p *sample, f *finding) []any {
	s.pendingMu.Lock()
	var lsn any
	if s.pending.lsn != "" {
		lsn, f.pendingW = s.pending.lsn, s.pending.w
	}
	s.pendingMu.Unlock()
	return append(append([]any{s.safe.Load()}, p.args()...), lsn)
}

// record keeps what a statement found: a flushed pending floor, and the
// watermark as the floor if the WAL is flushed past its sample, or else as
// the pending floor.
func (s *Store) record(f *finding) {
	if f.pendingFlushed {
		s.raiseSafe(f.pendingW)
	}
	if f.flushed {
		s.raiseSafe(f.w)
	}
	safe := s.safe.Load()
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	if s.pending.w <= safe {
		s.pending = pendingFloor{}
	}
	if f.w > safe && f.w > s.pending.w {
		s.pending = pendingFloor{w: f.w, lsn: f.sample.lsn}
	}
}

// sample is a listing's sample of the watermark: the last Seq drawn, the
// transaction IDs (32 bits) of the append lock's holders after, and the
// WAL's insert position then.
type sample struct {
	seq     int64
	holders []int64
	lsn     string
}

// prepareWatermark makes the statements of the listings, of the
// watermark's sample, and of the numbering of events left without a
// number (leftoverSQL).
func (s *Store) prepareWatermark(seq string) {
	s.sampleSeqSQL = s.expand(`SELECT set_config('` + settingSeq + `',
	(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {schema}.events_seq)::text, false)`)
	// One read of pg_locks: the append lock's holders (an int8 key is
	// shown as its high half in classid, its low half in objid, and
	// objsubid 1) and the ID each holds exclusive, its own; -1 for a
	// holder without one. An Append of this version has its ID from the
	// statement that takes the lock on; a replica of an earlier version
	// takes the lock exclusive and may draw Seqs before it has an ID. No
	// Seq is drawn past such a holder's before it ends, so it could not
	// make a listing skip; but a holder whose end cannot be checked makes
	// the sample unsafe all the same (see watermarkExpr), and a listing
	// that retries takes a fresh sample. If no Seq was
	// drawn past the watermark found before ($3), none is needed (and the
	// copy of the server's lock table is saved).
	s.sampleHoldersSQL = `SELECT set_config('` + settingHolders + `', CASE WHEN current_setting('` + settingSeq + `')::int8 <= $3::int8 THEN '{}' ELSE (
	WITH l AS MATERIALIZED (
		SELECT locktype, database, classid, objid, objsubid, transactionid, pid, mode, granted FROM pg_locks
	)
	SELECT coalesce(array_agg(coalesce(t.transactionid::text::int8, -1)), '{}') FROM l a
	LEFT JOIN l t ON t.pid = a.pid AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted
	WHERE a.locktype = 'advisory' AND a.granted AND a.objsubid = 1
		AND a.classid::int8 = $1::int8 AND a.objid::int8 = $2::int8
		AND a.database = (SELECT oid FROM pg_database WHERE datname = current_database())
)::text END, false), set_config('` + settingLSN + `', pg_current_wal_insert_lsn()::text, false)`
	// watermarkCTE judges a sample: w holds the watermark, the sample, and
	// whether the WAL is flushed past the sample (f) and past the pending
	// floor (pf). Parameters: $1 the floor, $2-$4 the sample or NULL (see
	// sampleExprs), $5 the pending floor's position or NULL.
	sampled, holders, lsn := sampleExprs(2)
	watermarkCTE := `WITH w AS MATERIALIZED (
	SELECT ` + watermarkExpr(`$1::int8`, 2) + ` AS w, ` + sampled + ` AS v, ` + holders + ` AS h, ` + lsn + `::text AS l,
		` + flushedExpr(lsn) + ` AS f, ` + flushedExpr(`$5::text::pg_lsn`) + ` AS pf
)`
	// watermarkSQL returns w's row.
	s.watermarkSQL = watermarkCTE + `
SELECT w.w, w.v, w.h, w.l, w.f, w.pf FROM w`
	// The listings return w's row and then the page. They start after the
	// events that have left (the retention row's payloads, read in the
	// listing's snapshot): a cursor at one of them goes on from the next
	// event that is still there. Parameters: $1-$5 as watermarkCTE's, $6
	// the cursor, $7 the page size; $8 the topic.
	list := func(topic string) string {
		return s.expand(watermarkCTE + `
SELECT w.w, w.v, w.h, w.l, w.f, w.pf, NULL::text, NULL::text, NULL::int8, NULL::text, NULL::bytea FROM w
UNION ALL
(SELECT seq, 0::int8, NULL::int8[], NULL::text, false, false, topic, event_id, ts, source, payload FROM {schema}.events
WHERE ` + topic + `seq > greatest($6::int8, (SELECT payloads FROM {schema}.retention)) AND seq <= (SELECT w FROM w)
ORDER BY seq LIMIT $7)`)
	}
	s.listSQL = list("")
	s.listTopicSQL = list("topic = $8 AND ")
	// readSampleSQL returns the sample that sampleSeqSQL and
	// sampleHoldersSQL left in the connection's settings.
	s.readSampleSQL = `SELECT current_setting('` + settingSeq + `')::int8, current_setting('` + settingHolders + `')::int8[],
	current_setting('` + settingLSN + `')`
	// leftoverSQL numbers, under the append lock taken exclusive, the
	// events that a replica of schema version 5 left with a provisional,
	// negative Seq (it stored them in one transaction and numbered them in
	// a second, which may have failed), in the order of their provisional
	// numbers; it notifies the schema's channel if it numbered any.
	s.leftoverSQL = s.expand(`WITH n AS MATERIALIZED (
	SELECT seq AS old, nextval(` + seq + `) AS new FROM (SELECT seq FROM {schema}.events WHERE seq < 0 ORDER BY seq DESC) p
), u AS (
	UPDATE {schema}.events e SET seq = n.new FROM n WHERE e.seq = n.old
)
SELECT count(*), (SELECT count(*) FROM (SELECT pg_notify(` + quoteLiteral(s.channel) + `, ` + quoteLiteral(s.schema) + `) FROM n LIMIT 1) x) FROM n`)
}

// queueSample queues the two statements that sample what a watermark
// needs (see above), before a statement that uses watermarkExpr.
func (s *Store) queueSample(q *pgx.Batch) {
	q.Queue(s.sampleSeqSQL)
	q.Queue(s.sampleHoldersSQL, int64(uint64(s.lockKey)>>32), int64(uint64(s.lockKey)&0xffffffff), s.safe.Load())
}

// args returns the parameters that pass a sample to a statement: NULLs
// for none, which makes it read the connection's settings.
func (p *sample) args() []any {
	if p == nil {
		return []any{nil, nil, nil}
	}
	return []any{p.seq, append([]int64{}, p.holders...), p.lsn} // an empty array, not NULL
}

// queueExpireWatermark queues on q, for an Expire, the statements that
// find its watermark without waiting: an Expire runs on the Aggregator's
// writer, which must not stall while an Append of another replica stays
// in flight. They judge the sample the previous Expire took, whose Appends
// have had the time between the two to end (for the first, a fresh one),
// and take a fresh sample for the next. It returns expireSQL's parameters
// from $4 on (the floor, the sample judged, the pending floor), for the
// statement q runs next, and a function to call once q has run.
func (s *Store) queueExpireWatermark(q *pgx.Batch) (args []any, done func()) {
	s.pendingMu.Lock()
	prev := s.expireSmp
	s.pendingMu.Unlock()
	var (
		f    finding
		next sample
	)
	s.queueSample(q)
	wargs := s.watermarkArgs(prev, &f)
	q.Queue(s.watermarkSQL, wargs...).QueryRow(func(row pgx.Row) error {
		return row.Scan(&f.w, &f.sample.seq, &f.sample.holders, &f.sample.lsn, &f.flushed, &f.pendingFlushed)
	})
	q.Queue(s.readSampleSQL).QueryRow(func(row pgx.Row) error {
		return row.Scan(&next.seq, &next.holders, &next.lsn)
	})
	// $1-$3 of watermarkArgs are $4-$6 here (the floor, the Seq and the
	// holders sampled; no position: expireSQL sets no floor), and the
	// pending floor follows.
	args = append(wargs[:3:3], wargs[4], f.pendingW)
	return args, func() {
		s.record(&f)
		s.pendingMu.Lock()
		s.expireSmp = &next
		s.pendingMu.Unlock()
	}
}

// heldContext returns a context that is cancelled when listings become
// held back, which wakes Watch.
func (s *Store) heldContext() context.Context {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	return s.heldCtx
}

// heldSignal cancels the context heldContext returned, for listings that
// became held back, and makes a new one.
func (s *Store) heldSignal() {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	s.heldCancel()
	s.heldCtx, s.heldCancel = context.WithCancel(context.Background())
}

// raiseSafe records w as a watermark found, if higher than the last.
func (s *Store) raiseSafe(w int64) {
	for old := s.safe.Load(); w > old && !s.safe.CompareAndSwap(old, w); old = s.safe.Load() {
	}
}

// page appends to dst up to n events with a Seq above after and up to the
// watermark, stopping once their payloads reach eventagg.PageBytes.
func (s *Store) page(ctx context.Context, dst []eventagg.Event, topic string, after int64, n int) ([]eventagg.Event, error) {
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	if s.closed.Load() {
		return dst, eventagg.ErrClosed
	}
	start, pause := time.Now(), 200*time.Microsecond
	var (
		q pgx.Batch
		p *sample
	)
	s.queueSample(&q)
	for {
		var (
			f   finding
			got []eventagg.Event
		)
		args := append(s.watermarkArgs(p, &f), after, n)
		sql := s.listSQL
		if topic != "" {
			sql, args = s.listTopicSQL, append(args, topic)
		}
		q.Queue(sql, args...).Query(func(rows pgx.Rows) (err error) {
			got, err = scanPage(rows, dst, &f)
			return err
		})
		if err := s.pool.SendBatch(ctx, &q).Close(); err != nil {
			return dst, s.fail(ctx, err)
		}
		s.record(&f)
		smp := &f.sample
		if f.w >= smp.seq || len(got)-len(dst) >= n {
			s.heldBack.Store(0)
			return got, nil
		}
		if wait := time.Since(start); wait >= listWait || wait >= heldBackWait && s.heldBack.Load() != 0 {
			if s.heldBack.CompareAndSwap(0, time.Now().UnixNano()) {
				s.heldSignal()
			}
			return got, nil
		}
		if err := sleep(ctx, pause); err != nil {
			return dst, err
		}
		pause = min(2*pause, 20*time.Millisecond)
		q, p = pgx.Batch{}, smp
		if slices.ContainsFunc(smp.holders, func(h int64) bool { return h < 0 }) {
			// A holder without a transaction ID cannot be told ended
			// later: the next attempt samples afresh.
			p = nil
			s.queueSample(&q)
		}
	}
}

// scanPage reads a listing's rows: the first into f, then the events,
// appended to dst until their payloads reach eventagg.PageBytes.
func scanPage(rows pgx.Rows, dst []eventagg.Event, f *finding) ([]eventagg.Event, error) {
	size := 0
	for first := true; size < eventagg.PageBytes && rows.Next(); first = false {
		var (
			seq, sampled, ns       *int64
			holders                []int64
			lsn, topic, id, source *string
			flushed, pending       bool
			payload                []byte
		)
		if err := rows.Scan(&seq, &sampled, &holders, &lsn, &flushed, &pending, &topic, &id, &ns, &source, &payload); err != nil {
			return dst, err
		}
		if first {
			f.w, f.sample = *seq, sample{seq: *sampled, holders: holders, lsn: *lsn}
			f.flushed, f.pendingFlushed = flushed, pending
			continue
		}
		dst = append(dst, eventagg.Event{Seq: *seq, Topic: *topic, EventID: *id, Source: *source,
			Timestamp: driver.FromNanos(*ns), Payload: payload})
		size += len(payload)
	}
	return dst, rows.Err()
}

// sleep pauses for d or until ctx ends, and then returns its error.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// numberLeftovers numbers the events that a replica of the version before
// this one left without a number (see leftoverSQL), if there are any.
func (s *Store) numberLeftovers(ctx context.Context) error {
	var left bool
	if err := s.pool.QueryRow(ctx, s.expand(`SELECT EXISTS (SELECT FROM {schema}.events WHERE seq < 0)`)).Scan(&left); err != nil || !left {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The transaction ID before any Seq is drawn, as for an Append.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1), pg_current_xact_id()`, s.lockKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, s.leftoverSQL)
		return err
	})
}

// StoreMetrics implements [eventagg.MetricsReporter]: whether listings are
// held back by an Append in flight for longer than they wait (see
// watermark.go), and for how long.
func (s *Store) StoreMetrics() []eventagg.StoreMetric {
	held, since := 0.0, 0.0
	if t := s.heldBack.Load(); t != 0 {
		held, since = 1, time.Since(time.Unix(0, t)).Seconds()
	}
	return []eventagg.StoreMetric{
		{Name: "eventagg_postgres_listings_held_back", Type: "gauge",
			Help: "1 while the last listing could not show every event committed before it began, as an Append of the schema stayed in flight for longer than " + listWait.String() + "; else 0.", Value: held},
		{Name: "eventagg_postgres_listings_held_back_seconds", Type: "gauge",
			Help: "How long listings have been held back by an Append in flight, in seconds; 0 when they are not.", Value: since},
	}
}
