package eventagg

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/eventagg/eventagg/internal/storekit"
	"github.com/ncruces/go-sqlite3"
)

// sqlitePage is how many events a listing reads per query, at most
// [PageBytes] of payload. Between pages the listing holds no connection and
// no read transaction, so a slow consumer neither blocks other readers nor
// keeps the write-ahead log from checkpointing.
const sqlitePage = 512

// Events implements [Store.Events]. It reads in pages of a few hundred events
// and at most about [PageBytes] of payload, so memory stays flat however many
// are listed and however large they are.
func (s *SQLiteStore) Events(ctx context.Context, q Query) iter.Seq2[Event, error] {
	return paginate(q, sqlitePage, func(dst []Event, after int64, n int) ([]Event, error) {
		return s.page(ctx, dst, q.Topic, after, n)
	})
}

func (s *SQLiteStore) page(ctx context.Context, dst []Event, topic string, after int64, n int) ([]Event, error) {
	err := s.read(ctx, func(r *sqliteReader) error {
		stmt := r.list
		if topic != "" {
			stmt = r.listTopic
			if err := stmt.BindText(3, topic); err != nil {
				return err
			}
		}
		if err := errors.Join(stmt.BindInt64(1, after), stmt.BindInt64(2, int64(n))); err != nil {
			return err
		}
		bytes := 0
		for bytes < PageBytes && stmt.Step() {
			dst = append(dst, Event{
				Seq:       stmt.ColumnInt64(0),
				Topic:     stmt.ColumnText(1),
				EventID:   stmt.ColumnText(2),
				Timestamp: storekit.FromNanos(stmt.ColumnInt64(3)),
				Source:    stmt.ColumnText(4),
				Payload:   stmt.ColumnBlob(5, nil),
			})
			bytes += len(dst[len(dst)-1].Payload)
		}
		return finish(stmt)
	})
	return dst, err
}

// Stats implements [Store.Stats]; the counters come from one read transaction.
func (s *SQLiteStore) Stats(ctx context.Context) (Stats, error) {
	topics := make(map[string]Counts)
	err := s.read(ctx, func(r *sqliteReader) error {
		stmt := r.stats
		for stmt.Step() {
			topics[stmt.ColumnText(0)] = columnCounts(stmt, 1)
		}
		return finish(stmt)
	})
	if err != nil {
		return Stats{}, err
	}
	return statsFromTopics(topics), nil
}

// QueryStats implements [StatsQuerier]: it sums the topics' counters and
// reads one page of them by name, in one read transaction, so that it holds
// no more than the page in memory however many topics there are.
func (s *SQLiteStore) QueryStats(ctx context.Context, q StatsQuery) (Stats, error) {
	st := Stats{Topics: make(map[string]Counts, min(max(q.TopicsLimit, 0), 1024))}
	err := s.read(ctx, func(r *sqliteReader) (err error) {
		if err := r.begin.Exec(); err != nil {
			return err
		}
		defer func() {
			if cerr := r.commit.Exec(); err == nil {
				err = cerr
			}
		}()
		t := r.totals
		if t.Step() {
			st.TopicCount = t.ColumnInt64(0)
			st.Counts = columnCounts(t, 1)
		}
		if err := finish(t); err != nil || q.TopicsLimit <= 0 {
			return err
		}
		p := r.topics
		if err := errors.Join(p.BindText(1, q.TopicsAfter), p.BindInt64(2, int64(q.TopicsLimit))); err != nil {
			return err
		}
		for p.Step() {
			st.Topics[p.ColumnText(0)] = columnCounts(p, 1)
		}
		return finish(p)
	})
	if err != nil {
		return Stats{}, err
	}
	return st, nil
}

// Ping implements [Pinger]: it reports the damage that stopped writes, if
// any (see [ErrDamaged]), checks that the files are still in place, and
// reads a page of the database.
func (s *SQLiteStore) Ping(ctx context.Context) error {
	if err := s.fault.get(); err != nil {
		return err
	}
	if s.closed() {
		return ErrClosed
	}
	if err := s.checkFiles(); err != nil {
		return err
	}
	return s.read(ctx, func(r *sqliteReader) error {
		for r.ping.Step() {
		}
		return finish(r.ping)
	})
}

// read runs fn on a reader of the pool. A panic of the driver (SQLite out of
// memory) becomes an error, and the reader is closed rather than reused.
// Corrupt data makes the store damaged (see classify).
func (s *SQLiteStore) read(ctx context.Context, fn func(*sqliteReader) error) (err error) {
	if s.exclusive {
		return s.readOnWriter(ctx, fn)
	}
	r, err := s.acquire(ctx)
	if err != nil {
		return s.classify(err)
	}
	defer func() {
		p := recover()
		if p != nil {
			err = fmt.Errorf("sqlite: %v", p)
		}
		// A transaction left open (its COMMIT interrupted) makes r unusable.
		s.release(r, p != nil || !r.conn.GetAutocommit())
	}()
	return s.classify(r.done(ctx, fn(r)))
}

// readOnWriter runs fn on the writer's connection, in exclusive mode, where
// it is the only connection.
func (s *SQLiteStore) readOnWriter(ctx context.Context, fn func(*sqliteReader) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed() {
		return ErrClosed
	}
	if err := s.writerReady(); err != nil {
		return err
	}
	defer s.recoverWriter(&err)
	r := s.wreader
	r.conn.SetInterrupt(ctx)
	defer r.conn.SetInterrupt(context.Background())
	return s.classify(r.done(ctx, fn(r)))
}

// sqliteReader is a read-only connection of the pool with its statements.
type sqliteReader struct {
	conn                          *sqlite3.Conn
	list, listTopic, stats, ping  *sqlite3.Stmt
	begin, commit, totals, topics *sqlite3.Stmt // QueryStats
	claims                        *sqlite3.Stmt // ClaimCounts
}

func (s *SQLiteStore) acquire(ctx context.Context) (*sqliteReader, error) {
	select {
	case <-s.done:
		return nil, ErrClosed
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case s.slots <- struct{}{}:
	case <-s.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var r *sqliteReader
	select {
	case r = <-s.idle:
	default:
		var err error
		if r, err = s.openReader(); err != nil {
			<-s.slots
			return nil, err
		}
	}
	r.conn.SetInterrupt(ctx)
	return r, nil
}

// release returns r to the pool, or closes it if it is broken or the store closed.
func (s *SQLiteStore) release(r *sqliteReader, broken bool) {
	if broken || s.closed() {
		closeConnQuietly(r.conn)
	} else {
		r.conn.SetInterrupt(context.Background())
		s.idle <- r // never blocks: at most cap(slots) readers exist
	}
	<-s.slots
}

func (s *SQLiteStore) openReader() (_ *sqliteReader, err error) {
	c, err := s.openConn(0)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			closeConn(c)
		}
	}()
	if err := c.Exec(`PRAGMA query_only=1`); err != nil {
		return nil, err
	}
	return prepareReader(c)
}

// prepareReader prepares the statements of a reader on c.
func prepareReader(c *sqlite3.Conn) (r *sqliteReader, err error) {
	r = &sqliteReader{conn: c}
	const cols = `SELECT e.seq, t.name, e.event_id, e.ts, e.source, e.payload `
	for _, p := range []struct {
		stmt **sqlite3.Stmt
		sql  string
	}{
		// Events up to the retention row's payloads have left (see sqlite_expire.go).
		{&r.list, cols + `FROM events e JOIN topics t ON t.id = e.topic_id
			WHERE e.seq > max(?1, (SELECT payloads FROM retention)) ORDER BY e.seq LIMIT ?2`},
		{&r.listTopic, cols + `FROM topics t JOIN events e ON e.topic_id = t.id
			WHERE t.name = ?3 AND e.seq > max(?1, (SELECT payloads FROM retention)) ORDER BY e.seq LIMIT ?2`},
		{&r.stats, `SELECT name, ` + countsColumns + ` FROM topics`},
		{&r.ping, `SELECT 1 FROM topics LIMIT 1`},
		{&r.begin, `BEGIN`},
		{&r.commit, `COMMIT`},
		{&r.totals, `SELECT count(*), coalesce(sum(received), 0), coalesce(sum(unique_processed), 0),
			coalesce(sum(duplicate_dropped), 0), coalesce(sum(conflicts), 0), coalesce(sum(expired), 0) FROM topics`},
		{&r.topics, `SELECT name, ` + countsColumns + ` FROM topics WHERE name > ?1 ORDER BY name LIMIT ?2`},
		{&r.claims, `SELECT
	(SELECT count(*) FROM claims WHERE expires > ?1),
	(SELECT count(*) FROM claims WHERE expires <= ?1) + (SELECT expired FROM claim_state)`},
	} {
		if *p.stmt, _, err = c.Prepare(p.sql); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// countsColumns are the counters of a topics row, as columnCounts reads them.
const countsColumns = `received, unique_processed, duplicate_dropped, conflicts, expired`

// columnCounts reads the counters of stmt's row, from column i on. Stored
// is what was stored and has not left.
func columnCounts(stmt *sqlite3.Stmt, i int) Counts {
	c := Counts{
		Received:         stmt.ColumnInt64(i),
		UniqueProcessed:  stmt.ColumnInt64(i + 1),
		DuplicateDropped: stmt.ColumnInt64(i + 2),
		Conflicts:        stmt.ColumnInt64(i + 3),
		Expired:          stmt.ColumnInt64(i + 4),
	}
	c.Stored = c.UniqueProcessed - c.Expired
	return c
}

// finish resets a statement after its rows were read and returns the first
// error of the run.
func finish(stmt *sqlite3.Stmt) error {
	err := stmt.Err()
	if rerr := stmt.Reset(); err == nil {
		err = rerr
	}
	return err
}

// done turns an interrupted read into the context's error.
func (r *sqliteReader) done(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && errors.Is(err, sqlite3.INTERRUPT) {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}
