package eventagg

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// Sync is how hard SQLite works to make a commit durable.
// See https://sqlite.org/pragma.html#pragma_synchronous.
type Sync int

const (
	// SyncFull, the default, fsyncs the write-ahead log before a commit is
	// acknowledged: an acknowledged event survives a crash of the process or
	// of the machine. The store runs SQLite at synchronous=NORMAL and does
	// the fsync itself, on a goroutine of its own, so that the fsync of one
	// transaction overlaps the work of the next; one fsync covers every
	// transaction committed before it began.
	SyncFull Sync = iota
	// SyncNormal fsyncs only at checkpoints: an acknowledged event survives a
	// crash of the process, but the last commits may be lost if the machine
	// loses power. The database stays consistent either way.
	SyncNormal
	// SyncOff never fsyncs. A crash of the machine may corrupt the database.
	// Use it only for data you can rebuild.
	SyncOff
)

func (s Sync) pragma() (string, error) {
	switch s {
	case SyncFull: // NORMAL, plus the walSyncer
		return "NORMAL", nil
	case SyncNormal:
		return "NORMAL", nil
	case SyncOff:
		return "OFF", nil
	}
	return "", fmt.Errorf("eventagg: unknown Sync value %d", int(s))
}

// SQLiteOptions configures [OpenSQLite]. The zero value is the default.
type SQLiteOptions struct {
	// Sync says when commits reach the disk; default SyncFull.
	Sync Sync
	// BusyTimeout is how long a statement waits for a lock held by another
	// connection or process; default 5s.
	BusyTimeout time.Duration
	// MaxReaders bounds the connections that serve Events and Stats; default 4.
	MaxReaders int
	// MaxSizeBytes, if positive, caps the size of the database file, rounded
	// down to whole pages (PRAGMA max_page_count). A write that would grow it
	// further fails with an error matching [ErrFull] (and sqlite3.FULL), as
	// on a full disk, and stores nothing; writes that fit in free pages go
	// on. The write-ahead log beside the file is not counted: it adds a few
	// MiB between checkpoints. A database already larger than the cap opens,
	// but does not grow. Default: no cap.
	MaxSizeBytes int64
	// Logger receives the store's own records: a checkpoint that fails, the
	// damage that makes the store refuse writes (see [ErrDamaged]), an open
	// on a full disk. Default: no logging.
	Logger *slog.Logger

	// For this package's tests; zero values mean the defaults.
	ckptPages    int              // default ckptPages
	ckptIdle     time.Duration    // default ckptIdle
	onCheckpoint func(ckptResult) // called after each checkpoint the checkpointer runs
}

// Schema identification, kept in the database header.
const (
	sqliteApplicationID = 0x45564147 // "EVAG"
	sqliteSchemaVersion = 1
)

// sqliteMigrations[v] moves a database from schema version v to v+1.
// Versions are recorded in PRAGMA user_version; add new steps at the end.
var sqliteMigrations = []string{
	0: `
CREATE TABLE topics (
	id                INTEGER PRIMARY KEY,
	name              TEXT NOT NULL UNIQUE,
	received          INTEGER NOT NULL DEFAULT 0,
	unique_processed  INTEGER NOT NULL DEFAULT 0,
	duplicate_dropped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE events (
	seq      INTEGER PRIMARY KEY,
	topic_id INTEGER NOT NULL REFERENCES topics (id),
	event_id TEXT NOT NULL,
	ts       INTEGER NOT NULL,
	source   TEXT NOT NULL DEFAULT '',
	payload  BLOB,
	UNIQUE (topic_id, event_id)
);
CREATE INDEX events_topic_seq ON events (topic_id, seq);
`,
}

// SQLiteStore is the embedded [Store]: one SQLite database file in WAL mode,
// written through a single connection and read through a small pool.
//
// Events and counters change in one transaction, so they agree after any crash.
// Several processes may open the same file: SQLite's locks serialise their
// writes, and deduplication and counters stay exact.
//
// # Checkpoints
//
// Commits append to the write-ahead log beside the database file; a
// checkpoint copies the log into the database, after which the log is
// written again from its start. The store checkpoints on a connection of its
// own, off the writer's path, without blocking writers or readers (PASSIVE):
// after a commit leaves 2048 pages or more in the log, and once writes pause
// for a second. Should the log still reach 16384 pages, the writer
// checkpoints before its next transaction. A checkpoint that fails is logged
// (at most once a minute while failures go on) and counted in StoreMetrics.
//
// # Damage
//
// After every commit is made durable, and at every Ping, the store checks
// that the database file and its log are still the files it has open, at
// their paths, no shorter than it wrote them. A file deleted, renamed,
// replaced or truncated under the store, a read that finds corrupt data, or
// a failed fsync makes it damaged for good (see [ErrDamaged]): it refuses
// every write, the batch in flight is not acknowledged, Ping reports the
// cause, and the store must be reopened once the files are repaired. Opening
// reads the edges of every table and index, so that a database whose body is
// damaged fails to open, saying so.
//
// # Full disk
//
// A write that finds no room fails with an error matching [ErrFull] and
// stores nothing; the store goes on serving reads, and the same write
// succeeds once there is room. If the disk is already full when an existing
// database is opened, SQLite cannot create the shared-memory index that
// several connections need, so the store opens it in exclusive mode
// instead: one connection serves reads and writes (which succeed once there
// is room again), and other processes cannot open the file until the store
// is closed. Reopen the store after freeing space to share the file again.
//
// SQLiteStore does not register a database/sql driver, so it coexists with any
// other SQLite driver in the same program.
type SQLiteStore struct {
	path     string
	opts     SQLiteOptions
	syncMode string // PRAGMA synchronous value
	log      *slog.Logger
	pageSize int64
	fault    fault        // sticky: set once the store is damaged
	files    *sqliteFiles // the database file and its log, watched

	// exclusive is set when the store was opened on a full disk: the writer
	// connection holds the file in exclusive locking mode, without shared
	// memory, and serves the reads too (through wreader), under mu.
	exclusive bool

	mu       sync.Mutex // guards the writer
	w        *sqlite3.Conn
	begin    *sqlite3.Stmt // BEGIN IMMEDIATE
	commit   *sqlite3.Stmt
	rollback *sqlite3.Stmt
	insEvent *sqlite3.Stmt
	getTopic *sqlite3.Stmt
	addTopic *sqlite3.Stmt
	addCount *sqlite3.Stmt
	topicIDs map[string]int64 // committed topics' ids, which never change; at most maxTopicIDs
	wreader  *sqliteReader    // statements of the readers, on w; in exclusive mode only

	slots chan struct{}      // one per reader that may be open
	idle  chan *sqliteReader // open readers not in use
	done  chan struct{}      // closed by Close
	once  sync.Once

	// syncer makes commits durable under SyncFull; nil otherwise.
	syncer *walSyncer

	// Checkpoints run on a connection of their own, off the writer's path.
	walFrames  atomic.Int64  // frames in the WAL after the last commit
	commits    atomic.Uint64 // commits made, to tell when writes pause
	ckpt       chan struct{} // buffered: a checkpoint is wanted
	ckptMu     sync.Mutex    // held by a checkpoint of this store's, so that two never collide
	ckptExited chan struct{} // closed when the checkpointer has closed its connection
	ckptStats  ckptStats
}

// Checkpoint thresholds, in WAL pages. After a commit that leaves the WAL at
// ckptPages or more, the checkpointer copies it into the database in the
// background while the writer goes on; it does so too once no commit was
// made for ckptIdle. Should the WAL still reach ckptHardFactor times
// ckptPages (writes go on without a pause, so that no checkpoint copies the
// whole log and lets it restart; or a long read holds it back), the writer
// checkpoints itself before its next transaction, which bounds the WAL and
// the cost of reading through it.
const (
	ckptPages      = 2048
	ckptHardFactor = 8
	ckptIdle       = time.Second
)

// maxTopicIDs bounds the writer's cache of topic ids.
const maxTopicIDs = 10000

// OpenSQLite opens the database at path, creating the file and the schema if
// needed. opts may be nil.
//
// It fails if the file is not an eventagg database, was written by a newer
// version of eventagg than this one, or is damaged (the error then matches
// [ErrDamaged]). On a full disk, a new database cannot be created (the error
// matches [ErrFull]), and an existing one opens in exclusive mode (see
// [SQLiteStore]).
func OpenSQLite(path string, opts *SQLiteOptions) (*SQLiteStore, error) {
	if path == "" || path == ":memory:" {
		return nil, errors.New("eventagg: OpenSQLite needs a file path (use NewMemoryStore for memory)")
	}
	s := &SQLiteStore{path: path, done: make(chan struct{})}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.BusyTimeout <= 0 {
		s.opts.BusyTimeout = 5 * time.Second
	}
	if s.opts.MaxReaders <= 0 {
		s.opts.MaxReaders = 4
	}
	if s.opts.ckptPages <= 0 {
		s.opts.ckptPages = ckptPages
	}
	if s.opts.ckptIdle <= 0 {
		s.opts.ckptIdle = ckptIdle
	}
	s.log = s.opts.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.fault.log = s.log
	syncMode, err := s.opts.Sync.pragma()
	if err != nil {
		return nil, err
	}
	s.slots = make(chan struct{}, s.opts.MaxReaders)
	s.idle = make(chan *sqliteReader, s.opts.MaxReaders)
	s.syncMode = syncMode

	existed := fileSize(path) > 0
	err = s.openWriter()
	if err != nil && fullDisk(err, path) && existed {
		// No room for the shared-memory index: read (and write, once there
		// is room) through one connection that needs none.
		closeConn(s.w)
		s.w, s.exclusive = nil, true
		if xerr := s.openWriter(); xerr != nil {
			err = errors.Join(err, fmt.Errorf("in exclusive mode: %w", xerr))
		} else {
			err = nil
			s.log.LogAttrs(context.Background(), slog.LevelWarn,
				"eventagg: the disk is full: the SQLite database is open in exclusive mode, for reads and, once there is room, writes; other processes cannot open it until this one closes it",
				slog.String("db", path))
		}
	}
	var ckptConn *sqlite3.Conn
	if err == nil {
		s.files, err = openSQLiteFiles(s.w, path)
	}
	if err == nil && !s.exclusive {
		ckptConn, err = s.openCheckpointConn()
	}
	if err != nil {
		closeConn(s.w)
		if s.files != nil {
			s.files.close()
		}
		if !existed && fileSize(path) == 0 {
			// Leave no empty database behind: the next open would take it
			// for one that lost its contents.
			for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
				os.Remove(path + suffix)
			}
		}
		return nil, fmt.Errorf("eventagg: open %s: %w", path, openError(err, path))
	}
	s.ckpt = make(chan struct{}, 1)
	s.ckptExited = make(chan struct{})
	go s.checkpointer(ckptConn)
	if s.opts.Sync == SyncFull {
		s.syncer = newWALSyncer(s.files.wal, s.checkFiles, &s.fault)
	}
	return s, nil
}

// openError says what an error of OpenSQLite on path means, in the terms of
// the package's errors.
func openError(err error, path string) error {
	switch {
	case isCorrupt(err):
		return damaged("the database is corrupt (restore it from a backup; PRAGMA integrity_check tells what is damaged): %w", err)
	case fullDisk(err, path):
		return full(err)
	}
	return err
}

// fileSize returns the size of the file at path, or -1 if there is none.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

func (s *SQLiteStore) openWriter() (err error) {
	if s.w, err = s.openConn(sqlite3.OPEN_CREATE); err != nil {
		return err
	}
	if s.exclusive {
		if err = s.w.Exec(`PRAGMA locking_mode=EXCLUSIVE`); err != nil {
			return err
		}
	}
	if err = s.w.Exec(`PRAGMA journal_mode=WAL`); err != nil {
		return err
	}
	if mode, err := pragmaText(s.w, "journal_mode"); err != nil {
		return err
	} else if mode != "wal" {
		return fmt.Errorf("cannot use WAL mode (journal_mode is %q)", mode)
	}
	if err = s.w.Exec(`PRAGMA synchronous=` + s.syncMode); err != nil {
		return err
	}
	if s.pageSize, err = pragmaInt(s.w, "page_size"); err != nil {
		return err
	}
	if s.opts.MaxSizeBytes > 0 {
		if err := s.w.Exec(fmt.Sprintf(`PRAGMA max_page_count=%d`, max(s.opts.MaxSizeBytes/s.pageSize, 1))); err != nil {
			return err
		}
	}
	if err = s.migrate(); err != nil {
		return err
	}
	if err = probe(s.w); err != nil {
		return err
	}
	if err = s.w.WALAutoCheckpoint(0); err != nil { // see checkpointer
		return err
	}
	s.w.WALHook(func(_ *sqlite3.Conn, _ string, frames int) error {
		s.walFrames.Store(int64(frames))
		if s.files != nil {
			s.files.committed(frames, s.pageSize)
		}
		return nil
	})
	for _, p := range []struct {
		stmt **sqlite3.Stmt
		sql  string
	}{
		{&s.begin, `BEGIN IMMEDIATE`},
		{&s.commit, `COMMIT`},
		{&s.rollback, `ROLLBACK`},
		{&s.insEvent, `INSERT INTO events (topic_id, event_id, ts, source, payload) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT DO NOTHING`},
		{&s.getTopic, `SELECT id FROM topics WHERE name = ?`},
		{&s.addTopic, `INSERT INTO topics (name) VALUES (?)`},
		{&s.addCount, `UPDATE topics SET received = received + ?2, unique_processed = unique_processed + ?3,
			duplicate_dropped = duplicate_dropped + ?4 WHERE id = ?1`},
	} {
		if *p.stmt, _, err = s.w.Prepare(p.sql); err != nil {
			return err
		}
	}
	if s.exclusive {
		if s.wreader, err = prepareReader(s.w); err != nil {
			return err
		}
	}
	s.topicIDs = make(map[string]int64)
	return nil
}

// openConn opens a connection to the database; flags may add
// sqlite3.OPEN_CREATE. Only the writer creates the file: a reader that finds
// it gone fails instead of creating an empty database.
func (s *SQLiteStore) openConn(flags sqlite3.OpenFlag) (*sqlite3.Conn, error) {
	c, err := sqlite3.OpenFlags(s.path, sqlite3.OPEN_READWRITE|flags)
	if err != nil {
		return nil, err
	}
	if err := c.BusyTimeout(s.opts.BusyTimeout); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// migrate creates or upgrades the schema in one transaction.
func (s *SQLiteStore) migrate() (err error) {
	tx, err := s.w.BeginImmediate()
	if err != nil {
		return err
	}
	if err = s.migrateTx(); err == nil {
		return tx.Commit()
	}
	return errors.Join(err, tx.Rollback())
}

func (s *SQLiteStore) migrateTx() error {
	appID, err := pragmaInt(s.w, "application_id")
	if err != nil {
		return err
	}
	version, err := pragmaInt(s.w, "user_version")
	if err != nil {
		return err
	}
	switch {
	case appID == 0 && version == 0:
		var objects int64
		stmt, _, err := s.w.Prepare(`SELECT count(*) FROM sqlite_schema`)
		if err != nil {
			return err
		}
		if stmt.Step() {
			objects = stmt.ColumnInt64(0)
		}
		if err := errors.Join(stmt.Err(), stmt.Close()); err != nil {
			return err
		}
		if objects > 0 {
			return errors.New("not an eventagg database (it holds other tables)")
		}
	case appID != sqliteApplicationID:
		return fmt.Errorf("not an eventagg database (application_id %#x)", appID)
	case version > sqliteSchemaVersion:
		return fmt.Errorf("database schema version %d is newer than this eventagg supports (%d): upgrade eventagg",
			version, sqliteSchemaVersion)
	}
	for v := version; v < sqliteSchemaVersion; v++ {
		if err := s.w.Exec(sqliteMigrations[v]); err != nil {
			return fmt.Errorf("migrate schema %d to %d: %w", v, v+1, err)
		}
	}
	if version < sqliteSchemaVersion {
		return s.w.Exec(fmt.Sprintf(`PRAGMA application_id=%d; PRAGMA user_version=%d`,
			sqliteApplicationID, sqliteSchemaVersion))
	}
	return nil
}

// Path returns the database file path given to OpenSQLite.
func (s *SQLiteStore) Path() string { return s.path }

// closed reports whether Close has been called.
func (s *SQLiteStore) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Append implements [Store.Append] in one IMMEDIATE transaction.
// With SyncFull, it returns after the commit reached the disk.
//
// If the fsync that makes the commit durable fails, or the files turn out to
// have been deleted, replaced or truncated under the store, Append returns
// an error matching [ErrDamaged] although the transaction is committed:
// whether it survives is unknown. Every later Append fails too, and the
// store must be reopened. A full disk gives an error matching [ErrFull].
func (s *SQLiteStore) Append(ctx context.Context, events []Event) ([]bool, error) {
	isNew, durable, err := s.appendNoWait(ctx, events)
	if err != nil {
		return nil, err
	}
	if err := durable(); err != nil {
		return nil, err
	}
	return isNew, nil
}

// syncing implements pipelinedStore: see walSyncer.syncing.
func (s *SQLiteStore) syncing() <-chan struct{} {
	if s.syncer == nil {
		return nil
	}
	return s.syncer.syncing()
}

// noWait is a durable func for commits that need no wait.
func noWait() error { return nil }

// appendNoWait commits events and returns without waiting for the commit to
// be durable: durable waits for that. It lets the Aggregator start the next
// transaction while the fsync of this one runs (see walSyncer).
func (s *SQLiteStore) appendNoWait(ctx context.Context, events []Event) (isNew []bool, durable func() error, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed() {
		return nil, nil, ErrClosed
	}
	if err := s.fault.get(); err != nil {
		return nil, nil, err
	}
	if err := s.writerReady(); err != nil {
		return nil, nil, err
	}
	defer s.recoverWriter(&err)
	if s.walFrames.Load() >= int64(ckptHardFactor*s.opts.ckptPages) {
		// RESTART waits for readers, so that the next commit writes the WAL
		// from its start; ckptMu waits for the checkpointer's pass, which
		// would make it fail with BUSY. A failure is not the caller's: the
		// next Append tries again, and the checkpointer's count and log show it.
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

	if err := s.begin.Exec(); err != nil {
		return nil, nil, err
	}
	var created map[string]int64 // topics inserted by this transaction
	isNew, created, err = s.appendTx(events)
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
		return nil, nil, s.classify(err)
	}
	if len(s.topicIDs)+len(created) > maxTopicIDs {
		clear(s.topicIDs) // a cache: bounded however many topics clients make
	}
	for name, id := range created {
		s.topicIDs[name] = id
	}
	s.commits.Add(1)
	if s.walFrames.Load() >= int64(s.opts.ckptPages) {
		select {
		case s.ckpt <- struct{}{}:
		default: // already asked
		}
	}
	if s.syncer == nil {
		// Without the syncer's check after its fsync, check here that the
		// commit went to the files at the path.
		if err := s.checkFiles(); err != nil {
			return nil, nil, err
		}
		return isNew, noWait, nil
	}
	ticket := s.syncer.commit()
	return isNew, func() error { return s.syncer.wait(ticket) }, nil
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

// appendTx does the work of Append inside its transaction.
func (s *SQLiteStore) appendTx(events []Event) (isNew []bool, created map[string]int64, err error) {
	isNew = make([]bool, len(events))
	ids := make(map[string]int64, 1) // topic ids of this batch
	for i := range events {
		e := &events[i]
		id, ok := ids[e.Topic]
		if !ok {
			if id, err = s.topicID(e.Topic, &created); err != nil {
				return nil, nil, err
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
		); err != nil {
			return nil, nil, err
		}
		if err := ins.Exec(); err != nil {
			return nil, nil, err
		}
		isNew[i] = s.w.Changes() > 0
	}
	for topic, c := range CountByTopic(events, isNew) {
		upd := s.addCount
		if err := errors.Join(
			upd.BindInt64(1, ids[topic]),
			upd.BindInt64(2, c.Received),
			upd.BindInt64(3, c.UniqueProcessed),
			upd.BindInt64(4, c.DuplicateDropped),
		); err != nil {
			return nil, nil, err
		}
		if err := upd.Exec(); err != nil {
			return nil, nil, err
		}
	}
	return isNew, created, nil
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

func bindPayload(stmt *sqlite3.Stmt, param int, p []byte) error {
	if len(p) == 0 {
		return stmt.BindNull(param)
	}
	return stmt.BindBlob(param, p)
}

// sqlitePage is how many events a listing reads per query, at most
// [PageBytes] of payload. Between pages the listing holds no connection and
// no read transaction, so a slow consumer neither blocks other readers nor
// keeps the write-ahead log from checkpointing.
const sqlitePage = 512

// Events implements [Store.Events]. It reads in pages of a few hundred events
// and at most about [PageBytes] of payload, so memory stays flat however many
// are listed and however large they are.
func (s *SQLiteStore) Events(ctx context.Context, q Query) iter.Seq2[Event, error] {
	return Paginate(q, sqlitePage, func(dst []Event, after int64, n int) ([]Event, error) {
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
				Timestamp: time.Unix(0, stmt.ColumnInt64(3)).UTC(),
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
			topics[stmt.ColumnText(0)] = Counts{
				Received:         stmt.ColumnInt64(1),
				UniqueProcessed:  stmt.ColumnInt64(2),
				DuplicateDropped: stmt.ColumnInt64(3),
			}
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
			st.Counts = Counts{Received: t.ColumnInt64(1), UniqueProcessed: t.ColumnInt64(2), DuplicateDropped: t.ColumnInt64(3)}
		}
		if err := finish(t); err != nil || q.TopicsLimit <= 0 {
			return err
		}
		p := r.topics
		if err := errors.Join(p.BindText(1, q.TopicsAfter), p.BindInt64(2, int64(q.TopicsLimit))); err != nil {
			return err
		}
		for p.Step() {
			st.Topics[p.ColumnText(0)] = Counts{Received: p.ColumnInt64(1), UniqueProcessed: p.ColumnInt64(2), DuplicateDropped: p.ColumnInt64(3)}
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

// Close waits for the write and the reads under way, then closes every
// connection. Calls after the first return nil.
func (s *SQLiteStore) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		<-s.ckptExited
		s.mu.Lock()
		if s.syncer != nil {
			err = s.syncer.close() // syncs the commits not yet durable
		}
		err = errors.Join(err, closeConn(s.w)) // the last connection to close checkpoints the WAL
		s.w, s.wreader = nil, nil
		s.mu.Unlock()
		for range cap(s.slots) { // wait for readers in use
			s.slots <- struct{}{}
		}
		for len(s.idle) > 0 {
			err = errors.Join(err, closeConn((<-s.idle).conn))
		}
		s.files.close()
	})
	return err
}

// sqliteReader is a read-only connection of the pool with its statements.
type sqliteReader struct {
	conn                          *sqlite3.Conn
	list, listTopic, stats, ping  *sqlite3.Stmt
	begin, commit, totals, topics *sqlite3.Stmt // QueryStats
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
		{&r.list, cols + `FROM events e JOIN topics t ON t.id = e.topic_id
			WHERE e.seq > ?1 ORDER BY e.seq LIMIT ?2`},
		{&r.listTopic, cols + `FROM topics t JOIN events e ON e.topic_id = t.id
			WHERE t.name = ?3 AND e.seq > ?1 ORDER BY e.seq LIMIT ?2`},
		{&r.stats, `SELECT name, received, unique_processed, duplicate_dropped FROM topics`},
		{&r.ping, `SELECT 1 FROM topics LIMIT 1`},
		{&r.begin, `BEGIN`},
		{&r.commit, `COMMIT`},
		{&r.totals, `SELECT count(*), coalesce(sum(received), 0), coalesce(sum(unique_processed), 0),
			coalesce(sum(duplicate_dropped), 0) FROM topics`},
		{&r.topics, `SELECT name, received, unique_processed, duplicate_dropped FROM topics
			WHERE name > ?1 ORDER BY name LIMIT ?2`},
	} {
		if *p.stmt, _, err = c.Prepare(p.sql); err != nil {
			return nil, err
		}
	}
	return r, nil
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

func pragmaInt(c *sqlite3.Conn, name string) (int64, error) {
	stmt, _, err := c.Prepare(`PRAGMA ` + name)
	if err != nil {
		return 0, err
	}
	var v int64
	if stmt.Step() {
		v = stmt.ColumnInt64(0)
	}
	return v, errors.Join(stmt.Err(), stmt.Close())
}

func pragmaText(c *sqlite3.Conn, name string) (string, error) {
	stmt, _, err := c.Prepare(`PRAGMA ` + name)
	if err != nil {
		return "", err
	}
	var v string
	if stmt.Step() {
		v = stmt.ColumnText(0)
	}
	return v, errors.Join(stmt.Err(), stmt.Close())
}

// closeConnQuietly closes c, ignoring errors and driver panics: it is for
// connections given up on.
func closeConnQuietly(c *sqlite3.Conn) {
	defer func() { recover() }()
	closeConn(c)
}

// closeConn finalises the statements of c, then closes it.
// It is safe to close a nil Conn.
func closeConn(c *sqlite3.Conn) error {
	if c == nil {
		return nil
	}
	var err error
	for _, stmt := range slices.Collect(c.Stmts()) {
		err = errors.Join(err, stmt.Close())
	}
	return errors.Join(err, c.Close())
}
