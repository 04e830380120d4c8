package eventagg

import (
	"context"
	"errors"

	"github.com/eventagg/eventagg/internal/storekit"
	"github.com/ncruces/go-sqlite3"
)

// How retention is kept in SQLite (schema version 3). Events leave in Seq
// order, so what has left is two prefixes of the events table, recorded in
// the one row of the retention table in the transactions that move them:
//
//   - payloads: every event with a Seq up to it has left: it is listed no
//     more and counted in topics.expired. Listings start after it.
//   - keys: every row with a Seq up to it is deleted. Rows between keys and
//     payloads are the kept keys of events that left (with a dedup window):
//     their payload and source are gone, and phash holds the payload's
//     digest (storekit.PayloadHash), by which a later copy is judged.
//
// Sequence numbers never go back: a new event gets one above both the
// largest stored and keys, even when every row has been deleted.

// sqliteRetention is the retention row, read at the start of every write
// transaction: another process may have moved it.
type sqliteRetention struct {
	payloads, keys int64
	nextSeq        int64 // the Seq the next event stored gets
}

// readRetention reads the retention row and the largest Seq in the current
// transaction. If another process removed keys since this store last did,
// the key cache may hold some of them: it is cleared.
func (s *SQLiteStore) readRetention() error {
	stmt := s.readRet
	if !stmt.Step() {
		return errors.Join(finish(stmt), errors.New("the retention row is missing"))
	}
	maxSeq := stmt.ColumnInt64(0)
	s.ret = sqliteRetention{payloads: stmt.ColumnInt64(1), keys: stmt.ColumnInt64(2)}
	s.ret.nextSeq = max(maxSeq, s.ret.keys) + 1
	if err := finish(stmt); err != nil {
		return err
	}
	if s.ret.keys > s.keysSeen {
		s.keys.clear()
		s.keysSeen = s.ret.keys
	}
	return nil
}

// Expire implements [Expirer] in one IMMEDIATE transaction: kept keys past
// q.KeysBefore leave first, oldest first, then events past
// q.PayloadsBefore: as a range delete when their keys leave with them, or
// by dropping their payload and source and keeping their digest when their
// keys stay.
func (s *SQLiteStore) Expire(ctx context.Context, q ExpireQuery) (ExpireResult, error) {
	if q.Limit <= 0 {
		return ExpireResult{}, errors.New("eventagg: ExpireQuery.Limit must be positive")
	}
	var (
		res  ExpireResult
		gone []Key // keys deleted: the cache must forget them
		keys int64 // the keys prefix after the transaction
	)
	err := s.writeTx(ctx, func() (err error) {
		res, gone, err = s.expireTx(q)
		keys = s.ret.keys
		return err
	}, func() {
		for _, k := range gone {
			s.keys.forget(k)
		}
		s.keysSeen = keys
	})
	if err != nil {
		return ExpireResult{}, err
	}
	return res, nil
}

// expiring is an event of the scan that leaves.
type expiring struct {
	seq    int64
	topic  int64
	key    Key
	digest []byte // of its payload, if its key stays
}

func (s *SQLiteStore) expireTx(q ExpireQuery) (res ExpireResult, gone []Key, err error) {
	keysBefore := q.PayloadsBefore
	if !q.KeysBefore.IsZero() && q.KeysBefore.Before(keysBefore) {
		keysBefore = q.KeysBefore
	}
	pb, kb := q.PayloadsBefore.UnixNano(), keysBefore.UnixNano()
	payloads, keys := s.ret.payloads, s.ret.keys

	// Kept keys whose dedup window has passed leave, oldest first.
	if payloads > keys {
		scan := s.scanKept
		if err := errors.Join(scan.BindInt64(1, keys), scan.BindInt64(2, payloads), scan.BindInt64(3, int64(q.Limit))); err != nil {
			return res, nil, err
		}
		to := keys
		for len(gone) < q.Limit && scan.Step() && scan.ColumnInt64(1) < kb {
			to = scan.ColumnInt64(0)
			gone = append(gone, Key{Topic: scan.ColumnText(2), EventID: scan.ColumnText(3)})
		}
		if err := finish(scan); err != nil {
			return res, nil, err
		}
		if to > keys {
			if err := s.deleteRange(keys, to); err != nil {
				return res, nil, err
			}
			res.Keys += len(gone)
			keys = to
		}
	}
	keptGone := len(gone)

	// Events whose window has passed leave, oldest first. Their rows go
	// too while their keys leave with them and nothing is kept before them.
	scan := s.scanLive
	if err := errors.Join(scan.BindInt64(1, payloads), scan.BindInt64(2, int64(q.Limit))); err != nil {
		return res, nil, err
	}
	var leaving []expiring
	deleteTo := keys // rows up to it are deleted by this transaction
	for scan.Step() && scan.ColumnInt64(1) < pb {
		e := expiring{seq: scan.ColumnInt64(0), topic: scan.ColumnInt64(4),
			key: Key{Topic: scan.ColumnText(2), EventID: scan.ColumnText(3)}}
		if deleteTo == payloads && scan.ColumnInt64(1) < kb {
			deleteTo = e.seq
		} else {
			e.digest = storekit.PayloadHash(scan.ColumnRawBlob(5))
		}
		payloads = e.seq
		leaving = append(leaving, e)
	}
	if err := finish(scan); err != nil {
		return res, nil, err
	}
	if len(leaving) == 0 && len(gone) == 0 {
		return res, nil, nil
	}
	expired := map[int64]int64{}
	for _, e := range leaving {
		expired[e.topic]++
		if e.digest == nil {
			gone = append(gone, e.key)
			res.Keys++
			continue
		}
		keep := s.keepKey
		if err := errors.Join(keep.BindInt64(1, e.seq), keep.BindBlob(2, e.digest)); err != nil {
			return res, nil, err
		}
		if err := keep.Exec(); err != nil {
			return res, nil, err
		}
	}
	if deleteTo > keys {
		if err := s.deleteRange(keys, deleteTo); err != nil {
			return res, nil, err
		}
		keys = deleteTo
	}
	for topic, n := range expired {
		upd := s.addExpired
		if err := errors.Join(upd.BindInt64(1, topic), upd.BindInt64(2, n)); err != nil {
			return res, nil, err
		}
		if err := upd.Exec(); err != nil {
			return res, nil, err
		}
	}
	set := s.setRet
	if err := errors.Join(set.BindInt64(1, payloads), set.BindInt64(2, keys)); err != nil {
		return res, nil, err
	}
	if err := set.Exec(); err != nil {
		return res, nil, err
	}
	s.ret.payloads, s.ret.keys = payloads, keys
	res.Events = len(leaving)
	res.More = len(leaving) == q.Limit || keptGone == q.Limit
	return res, gone, nil
}

// deleteRange deletes the rows with a Seq in (from, to].
func (s *SQLiteStore) deleteRange(from, to int64) error {
	del := s.delRange
	if err := errors.Join(del.BindInt64(1, from), del.BindInt64(2, to)); err != nil {
		return err
	}
	return del.Exec()
}

// retentionStatements are the writer's statements for retention.
func (s *SQLiteStore) retentionStatements() []struct {
	stmt **sqlite3.Stmt
	sql  string
} {
	const scan = `SELECT e.seq, e.accepted, t.name, e.event_id, e.topic_id, e.payload FROM events e JOIN topics t ON t.id = e.topic_id `
	return []struct {
		stmt **sqlite3.Stmt
		sql  string
	}{
		{&s.readRet, `SELECT coalesce((SELECT max(seq) FROM events), 0), payloads, keys FROM retention`},
		{&s.setRet, `UPDATE retention SET payloads = ?1, keys = ?2`},
		{&s.scanLive, scan + `WHERE e.seq > ?1 ORDER BY e.seq LIMIT ?2`},
		{&s.scanKept, scan + `WHERE e.seq > ?1 AND e.seq <= ?2 ORDER BY e.seq LIMIT ?3`},
		{&s.keepKey, `UPDATE events SET payload = NULL, source = '', phash = ?2 WHERE seq = ?1`},
		{&s.delRange, `DELETE FROM events WHERE seq > ?1 AND seq <= ?2`},
		{&s.addExpired, `UPDATE topics SET expired = expired + ?2 WHERE id = ?1`},
	}
}
