package eventagg

import (
	"context"
	"errors"
	"fmt"

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

// Defaults of [SQLiteOptions].
const (
	DefaultBusyTimeout = 5 * time.Second // wait for a lock held by another process
	DefaultMaxReaders  = 4               // connections serving reads
)

// SQLiteOptions configures [OpenSQLite]. The zero value is the default.
type SQLiteOptions struct {
	// Sync says when commits reach the disk; default SyncFull.
	Sync Sync
	// BusyTimeout is how long a statement waits for a lock held by another
	// connection or process; default DefaultBusyTimeout.
	BusyTimeout time.Duration
	// MaxReaders bounds the connections that serve Events and Stats;
	// default DefaultMaxReaders.
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
	keys     *keyCache        // digests of stored copies, for resends
	keysSeen int64            // the retention keys prefix the cache agrees with
	ret      sqliteRetention  // read at the start of each write transaction

	readRet, setRet, scanLive, scanKept, keepKey, delRange, addExpired *sqlite3.Stmt // retention
	claimDone, claimGet, claimToken, claimPut, claimDel, claimLapsed   *sqlite3.Stmt // claims
	wreader                                                            *sqliteReader // statements of the readers, on w; in exclusive mode only

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
		s.opts.BusyTimeout = DefaultBusyTimeout
	}
	if s.opts.MaxReaders <= 0 {
		s.opts.MaxReaders = DefaultMaxReaders
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
	for _, p := range append([]struct {
		stmt **sqlite3.Stmt
		sql  string
	}{
		{&s.begin, `BEGIN IMMEDIATE`},
		{&s.commit, `COMMIT`},
		{&s.rollback, `ROLLBACK`},
		// A copy of a stored key changes nothing when its payload is the
		// stored copy's, byte for byte (or, for a kept key whose event left,
		// when its digest ?8 is phash), and otherwise rewrites the row as
		// it is, so that Changes tells a conflict from a duplicate.
		{&s.insEvent, `INSERT INTO events (topic_id, event_id, ts, source, payload, seq, accepted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
			ON CONFLICT (topic_id, event_id) DO UPDATE SET ts = ts
			WHERE CASE WHEN phash IS NULL THEN payload IS NOT excluded.payload ELSE phash IS NOT ?8 END`},
		{&s.getTopic, `SELECT id FROM topics WHERE name = ?`},
		{&s.addTopic, `INSERT INTO topics (name) VALUES (?)`},
		{&s.addCount, `UPDATE topics SET received = received + ?2, unique_processed = unique_processed + ?3,
			duplicate_dropped = duplicate_dropped + ?4, conflicts = conflicts + ?5 WHERE id = ?1`},
	}, append(s.retentionStatements(), s.claimStatements()...)...) {
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
	if s.keys == nil {
		s.keys = newKeyCache(keyCacheSize)
	}
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
