package eventagg

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/eventagg/eventagg/internal/storekit"
	"github.com/ncruces/go-sqlite3"
)

// Append implements [Store.Append] in one IMMEDIATE transaction.
// With SyncFull, it returns after the commit reached the disk.
//
// If the fsync that makes the commit durable fails, or the files turn out to
// have been deleted, replaced or truncated under the store, Append returns
// an error matching [ErrDamaged] although the transaction is committed:
// whether it survives is unknown. Every later Append fails too, and the
// store must be reopened. A full disk gives an error matching [ErrFull].
func (s *SQLiteStore) Append(ctx context.Context, events []Event, opts AppendOptions) ([]Outcome, error) {
	outcomes, wait, err := s.AppendAsync(ctx, events, opts)
	if err != nil {
		return nil, err
	}
	if err := wait(); err != nil {
		return nil, err
	}
	return outcomes, nil
}

// Busy implements [Pipeliner]: under SyncFull, while a commit waits for an
// fsync of the log that has not started (the one under way began before
// it), a further commit would wait for that same fsync; Busy returns a
// channel closed when it starts. Nil otherwise.
func (s *SQLiteStore) Busy() <-chan struct{} {
	if s.syncer == nil {
		return nil
	}
	return s.syncer.syncing()
}

// AppendAsync implements [Pipeliner]: it commits events and returns without
// waiting for the commit to be durable; wait waits for that (under SyncFull,
// for an fsync of the log that began after the commit, see walSyncer), so
// that the Aggregator commits the next batch while this one is fsynced.
func (s *SQLiteStore) AppendAsync(ctx context.Context, events []Event, opts AppendOptions) (outcomes []Outcome, wait func() error, err error) {
	return s.appendAsync(ctx, events, opts, nil)
}

// appendAsync is AppendAsync, running also, if not nil, first in the
// transaction: an error from it rolls the transaction back.
func (s *SQLiteStore) appendAsync(ctx context.Context, events []Event, opts AppendOptions, also func() error) (outcomes []Outcome, wait func() error, err error) {
	var (
		created map[string]int64 // topics inserted by this transaction
		known   []knownKey       // keys to remember once it commits
	)
	err = s.writeTx(ctx, func() (err error) {
		if also != nil {
			if err := also(); err != nil {
				return err
			}
		}
		outcomes, created, known, err = s.appendTx(events, opts)
		return err
	}, func() {
		if len(s.topicIDs)+len(created) > maxTopicIDs {
			clear(s.topicIDs) // a cache: bounded however many topics clients make
		}
		for name, id := range created {
			s.topicIDs[name] = id
		}
		for _, k := range known {
			s.keys.add(k.key, k.d)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	if s.syncer == nil {
		// Without the syncer's check after its fsync, check here that the
		// commit went to the files at the path.
		if err := s.checkFiles(); err != nil {
			return nil, nil, err
		}
		return outcomes, durable, nil
	}
	ticket := s.syncer.register()
	return outcomes, func() error { return s.syncer.wait(ticket) }, nil
}

// writeTx runs fn in an IMMEDIATE transaction of the writer, and then, once
// the transaction committed, committed; both under s.mu. It rolls back if fn
// fails, and gives the error its place in the package's vocabulary.
func (s *SQLiteStore) writeTx(ctx context.Context, fn func() error, committed func()) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed() {
		return ErrClosed
	}
	if err := s.fault.get(); err != nil {
		return err
	}
	if err := s.writerReady(); err != nil {
		return err
	}
	defer s.recoverWriter(&err)
	if s.walFrames.Load() >= int64(ckptHardFactor*s.opts.ckptPages) {
		// RESTART waits for readers, so that the next commit writes the WAL
		// from its start; ckptMu waits for the checkpointer's pass, which
		// would make it fail with BUSY. A failure is not the caller's: the
		// next transaction tries again, and the checkpointer's count and
		// log show it.
		s.ckptMu.Lock()
		_, _, err := s.w.WALCheckpoint("main", sqlite3.CHECKPOINT_RESTART)
		s.ckptMu.Unlock()
		s.ckptStats.note(s, s.classify(err))
		if err == nil {
			s.walFrames.Store(0)
		}
	}
	s.w.SetInterrupt(ctx)
	defer s.w.SetInterrupt(context.Background())

	if err = s.begin.Exec(); err == nil {
		if err = s.readRetention(); err == nil {
			err = fn()
		}
	}
	if err == nil {
		err = s.commit.Exec()
	}
	if err != nil {
		s.w.SetInterrupt(context.Background()) // roll back even if ctx ended
		if !s.w.GetAutocommit() {
			if rerr := s.rollback.Exec(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
		}
		if ctx.Err() != nil && errors.Is(err, sqlite3.INTERRUPT) {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return s.classify(err)
	}
	committed()
	s.commits.Add(1)
	if s.walFrames.Load() >= int64(s.opts.ckptPages) {
		select {
		case s.ckpt <- struct{}{}:
		default: // already asked
		}
	}
	return nil
}

// writerReady makes sure s.w is usable: it opens a new writer if a panic
// discarded the last one, and ends a transaction a failed rollback left
// open. s.mu must be held.
func (s *SQLiteStore) writerReady() error {
	if s.w == nil {
		if err := s.openWriter(); err != nil {
			closeConn(s.w)
			s.w, s.wreader = nil, nil
			return s.classify(err)
		}
	}
	if !s.w.GetAutocommit() {
		if err := s.w.Exec(`ROLLBACK`); err != nil {
			return s.classify(err)
		}
	}
	return nil
}

// recoverWriter, deferred while s.w is in use, turns a panic of the driver
// (SQLite ran out of memory) into *err and discards the writer, whose
// transaction was abandoned, rather than trust its state. s.mu must be held.
func (s *SQLiteStore) recoverWriter(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("sqlite: %v", p)
		closeConnQuietly(s.w)
		s.w, s.wreader = nil, nil
	}
}

// appendTx does the work of Append inside its transaction. It returns the
// keys to remember in the cache once the transaction commits.
func (s *SQLiteStore) appendTx(events []Event, opts AppendOptions) (outcomes []Outcome, created map[string]int64, known []knownKey, err error) {
	outcomes = make([]Outcome, len(events))
	ids := make(map[string]int64, 1) // topic ids of this batch
	accepted := opts.AcceptedAt
	if accepted.IsZero() {
		accepted = time.Now()
	}
	acceptedNs := accepted.UnixNano()
	kept := s.ret.payloads > s.ret.keys // some keys are kept without their event: judged by digest
	for i := range events {
		e := &events[i]
		d := s.keys.digest(e.Payload)
		if stored, ok := s.keys.get(e.Key()); ok { // no query: the key is stored
			outcomes[i].Status = Duplicate
			if stored != d {
				if opts.RejectConflicts {
					return nil, nil, nil, &ConflictError{Index: i, Key: e.Key()}
				}
				outcomes[i].Status = Conflict
			}
			continue
		}
		id, ok := ids[e.Topic]
		if !ok {
			if id, err = s.topicID(e.Topic, &created); err != nil {
				return nil, nil, nil, err
			}
			ids[e.Topic] = id
		}
		ins := s.insEvent
		if err := errors.Join(
			ins.BindInt64(1, id),
			ins.BindText(2, e.EventID),
			ins.BindInt64(3, e.Timestamp.UnixNano()),
			ins.BindText(4, e.Source),
			bindPayload(ins, 5, e.Payload),
			ins.BindInt64(6, s.ret.nextSeq),
			ins.BindInt64(7, acceptedNs),
			bindKeptDigest(ins, 8, kept, e.Payload),
		); err != nil {
			return nil, nil, nil, err
		}
		s.w.SetLastInsertRowID(0) // no row has rowid 0: only an insert sets another
		if err := ins.Exec(); err != nil {
			return nil, nil, nil, err
		}
		// The insert happened (a rowid), or the upsert found the key stored
		// with another payload and rewrote the row as it was (a conflict),
		// or did nothing (a duplicate: the stored copy has this payload).
		switch seq := s.w.LastInsertRowID(); {
		case seq != 0:
			outcomes[i] = Outcome{Status: Stored, Seq: seq}
			s.ret.nextSeq++
			known = append(known, knownKey{e.Key(), d})
		case s.w.Changes() == 0:
			outcomes[i].Status = Duplicate
			known = append(known, knownKey{e.Key(), d})
		case opts.RejectConflicts:
			return nil, nil, nil, &ConflictError{Index: i, Key: e.Key()}
		default:
			outcomes[i].Status = Conflict
		}
	}
	for topic, c := range countByTopic(events, outcomes) {
		id, ok := ids[topic]
		if !ok { // every event of the topic was judged from the cache
			if id, err = s.topicID(topic, &created); err != nil {
				return nil, nil, nil, err
			}
		}
		upd := s.addCount
		if err := errors.Join(
			upd.BindInt64(1, id),
			upd.BindInt64(2, c.Received),
			upd.BindInt64(3, c.UniqueProcessed),
			upd.BindInt64(4, c.DuplicateDropped),
			upd.BindInt64(5, c.Conflicts),
		); err != nil {
			return nil, nil, nil, err
		}
		if err := upd.Exec(); err != nil {
			return nil, nil, nil, err
		}
	}
	return outcomes, created, known, nil
}

// knownKey is a key found stored, with the digest of the stored payload.
type knownKey struct {
	key Key
	d   digest
}

// topicID returns the id of a topic, inserting its row if needed and
// recording the insert in *created. A row found was committed before: its
// id goes into the cache at once.
func (s *SQLiteStore) topicID(name string, created *map[string]int64) (int64, error) {
	if id, ok := s.topicIDs[name]; ok {
		return id, nil
	}
	if err := s.getTopic.BindText(1, name); err != nil {
		return 0, err
	}
	var id int64
	if s.getTopic.Step() {
		id = s.getTopic.ColumnInt64(0)
	}
	if err := finish(s.getTopic); err != nil {
		return 0, err
	}
	if id != 0 {
		if len(s.topicIDs) >= maxTopicIDs {
			clear(s.topicIDs)
		}
		s.topicIDs[name] = id
		return id, nil
	}
	if err := s.addTopic.BindText(1, name); err != nil {
		return 0, err
	}
	if err := s.addTopic.Exec(); err != nil {
		return 0, err
	}
	id = s.w.LastInsertRowID()
	if *created == nil {
		*created = make(map[string]int64)
	}
	(*created)[name] = id
	return id, nil
}

// bindKeptDigest binds the digest of payload p when kept keys exist, which
// are judged by it, and NULL otherwise.
func bindKeptDigest(stmt *sqlite3.Stmt, param int, kept bool, p []byte) error {
	if !kept {
		return stmt.BindNull(param)
	}
	return stmt.BindBlob(param, storekit.PayloadHash(p))
}

func bindPayload(stmt *sqlite3.Stmt, param int, p []byte) error {
	if len(p) == 0 {
		return stmt.BindNull(param)
	}
	return stmt.BindBlob(param, p)
}
