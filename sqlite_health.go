package eventagg

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/vfs"
	"golang.org/x/sys/unix"
)

// fault is the sticky failure of a store that can no longer vouch for what it
// acknowledges (see ErrDamaged). The first error recorded wins.
type fault struct {
	err atomic.Pointer[error]
	log *slog.Logger
}

// get returns the recorded fault, or nil.
func (f *fault) get() error {
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}

// set records err, which must match ErrDamaged, unless a fault is recorded
// already; it logs the first one and returns whichever is recorded.
func (f *fault) set(err error) error {
	if f.err.CompareAndSwap(nil, &err) {
		f.log.LogAttrs(context.Background(), slog.LevelError,
			"eventagg: SQLite store damaged: refusing every write until it is reopened", slog.Any("error", err))
	}
	return f.get()
}

// kindError matches kind, one of the package's errors, and whatever err
// matches; it reads as err, so that messages do not repeat the package name.
type kindError struct{ kind, err error }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// damaged returns an error matching ErrDamaged that says what happened.
func damaged(format string, args ...any) error {
	return &kindError{ErrDamaged, fmt.Errorf("store damaged: "+format, args...)}
}

// full returns err as an error matching ErrFull.
func full(err error) error {
	return &kindError{ErrFull, fmt.Errorf("no space left: %w", err)}
}

// isCorrupt reports whether err says the database file holds corrupt data.
func isCorrupt(err error) bool {
	return errors.Is(err, sqlite3.CORRUPT) || errors.Is(err, sqlite3.NOTADB)
}

// isFull reports whether err comes from a full disk or a full database.
// A full tmpfs surfaces as an I/O error wrapping ENOSPC rather than as
// sqlite3.FULL, and a shared-memory index that cannot grow (for want of
// space, on Linux) as IOERR_SHMSIZE without the system's error: all three
// are looked for.
func isFull(err error) bool {
	return errors.Is(err, sqlite3.FULL) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, sqlite3.IOERR_SHMSIZE)
}

// fullDisk reports whether err comes from a full disk holding path: isFull,
// or an I/O error without the system's error (SQLite loses it on some
// paths) while the file system has less than a MiB left.
func fullDisk(err error, path string) bool {
	if isFull(err) {
		return true
	}
	if !errors.Is(err, sqlite3.IOERR) {
		return false
	}
	var st unix.Statfs_t
	if unix.Statfs(filepath.Dir(path), &st) != nil {
		return false
	}
	free := st.Bavail
	if os.Geteuid() == 0 {
		free = st.Bfree // root may write into the reserved blocks
	}
	return free*uint64(st.Bsize) < 1<<20
}

// classify gives an error of SQLite its place in the package's vocabulary:
// a corrupt database makes the store damaged for good; a full disk or
// database matches ErrFull. Other errors are returned as they are.
func (s *SQLiteStore) classify(err error) error {
	switch {
	case err == nil, errors.Is(err, ErrDamaged), errors.Is(err, ErrFull):
		return err
	case isCorrupt(err):
		return s.fault.set(damaged("database %s is corrupt (restore it from a backup; PRAGMA integrity_check tells what is damaged): %w", s.path, err))
	case fullDisk(err, s.path):
		return full(err)
	}
	return err
}

// walHeaderSize is the size of the header of a write-ahead log file, whose
// first four bytes are one of walMagic.
const walHeaderSize = 32

var walMagic = [2]uint32{0x377f0682, 0x377f0683}

// sqliteFiles watches the database file and its write-ahead log, so that the
// store notices when they are deleted, renamed, replaced or truncated under
// it: SQLite goes on writing to the files it has open, and what it writes to
// a file no longer at the path is lost when the store is reopened.
type sqliteFiles struct {
	mu      sync.RWMutex // held for reading while the files are used; closed guards them
	closed  bool
	db, wal *os.File // the files SQLite has open, opened again by the store
	// The least size each file may have: the largest size seen, and for the
	// log the end of the last frame this store committed. Neither file ever
	// shrinks while the store is open (the store never truncates the log and
	// never vacuums), so a smaller size means another program truncated it.
	dbLeast, walLeast atomic.Int64
}

// openSQLiteFiles opens the database file and the write-ahead log that the
// connection c has open, and checks that they are the very files c uses.
func openSQLiteFiles(c *sqlite3.Conn, path string) (_ *sqliteFiles, err error) {
	f := &sqliteFiles{}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	if f.db, err = os.Open(path); err != nil {
		return nil, err
	}
	// The store fsyncs the log through this descriptor (see walSyncer).
	if f.wal, err = os.OpenFile(path+"-wal", os.O_RDWR, 0); err != nil {
		return nil, err
	}
	for _, x := range []struct {
		op   sqlite3.FcntlOpcode
		file *os.File
	}{{sqlite3.FCNTL_FILE_POINTER, f.db}, {sqlite3.FCNTL_JOURNAL_POINTER, f.wal}} {
		same, err := sameFile(c, x.op, x.file)
		if err != nil {
			return nil, err
		}
		if !same {
			return nil, fmt.Errorf("%s was replaced while it was being opened", x.file.Name())
		}
	}
	if _, err := f.check(); err != nil {
		return nil, err
	}
	return f, nil
}

// sameFile reports whether the file SQLite has open for op (the database or
// its journal) is the file f.
func sameFile(c *sqlite3.Conn, op sqlite3.FcntlOpcode, f *os.File) (bool, error) {
	p, err := c.FileControl("main", op)
	if err != nil {
		return false, err
	}
	type statter interface{ Stat() (fs.FileInfo, error) }
	file, _ := p.(vfs.File)
	for file != nil {
		if st, ok := file.(statter); ok {
			a, err := st.Stat()
			if err != nil {
				return false, err
			}
			b, err := f.Stat()
			if err != nil {
				return false, err
			}
			return os.SameFile(a, b), nil
		}
		u, ok := file.(vfs.FileUnwrap)
		if !ok {
			break
		}
		file = u.Unwrap()
	}
	return false, fmt.Errorf("cannot tell which file SQLite has open (%T)", p)
}

// committed records that the log now holds frames frames of pageSize bytes.
func (f *sqliteFiles) committed(frames int, pageSize int64) {
	raise(&f.walLeast, walHeaderSize+int64(frames)*(pageSize+24))
}

// raise sets v to n if n is larger.
func raise(v *atomic.Int64, n int64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}

// check returns an error matching ErrDamaged if either file is no longer the
// file at its path, or is shorter than the store knows it to be, or if the
// log lost its header; another error if it could not tell; nil otherwise.
// It returns the size of the log.
func (f *sqliteFiles) check() (walSize int64, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return 0, ErrClosed
	}
	if _, err := checkFile(f.db, "database file", &f.dbLeast); err != nil {
		return 0, err
	}
	if walSize, err = checkFile(f.wal, "write-ahead log", &f.walLeast); err != nil {
		return 0, err
	}
	if walSize >= walHeaderSize {
		var b [4]byte
		if _, err := f.wal.ReadAt(b[:], 0); err != nil {
			return 0, err
		}
		if m := binary.BigEndian.Uint32(b[:]); m != walMagic[0] && m != walMagic[1] {
			return 0, damaged("the header of the write-ahead log %s was overwritten (the file was truncated or written by another program); the transactions it holds are lost", f.wal.Name())
		}
	}
	return walSize, nil
}

func checkFile(f *os.File, what string, least *atomic.Int64) (int64, error) {
	// The least size is read first: a commit may raise it meanwhile, but
	// only once its frames are in the file, so the size read next covers it.
	n := least.Load()
	open, err := f.Stat()
	if err != nil {
		return 0, err
	}
	named, err := os.Stat(f.Name())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, damaged("the %s %s was deleted or renamed while open; what the store writes from now on would be lost", what, f.Name())
	case err != nil:
		return 0, err
	case !os.SameFile(open, named):
		return 0, damaged("the %s %s was replaced by another file while open; what the store writes from now on would be lost", what, f.Name())
	}
	if open.Size() < n {
		return 0, damaged("the %s %s was truncated from at least %d to %d bytes while open; data in it is lost", what, f.Name(), n, open.Size())
	}
	raise(least, open.Size())
	return open.Size(), nil
}

// walSize returns the size of the log file, or 0 if it cannot tell.
func (f *sqliteFiles) walSize() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return 0
	}
	fi, err := f.wal.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

// checkFiles runs files.check and records what it finds as the store's
// fault: a damage, or an error that keeps it from telling whether the files
// are in place (the store cannot vouch for its writes then either). It
// returns ErrClosed once the store is closed.
func (s *SQLiteStore) checkFiles() error {
	_, err := s.files.check()
	switch {
	case err == nil, errors.Is(err, ErrClosed):
		return err
	case !errors.Is(err, ErrDamaged):
		err = damaged("cannot tell whether the database files of %s are still in place: %w", s.path, err)
	}
	return s.fault.set(err)
}

func (f *sqliteFiles) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if f.db != nil {
		f.db.Close()
	}
	if f.wal != nil {
		f.wal.Close()
	}
}

// probeSQL reads the first and last rows of each table and the first entry of
// each index: the root pages and the pages along the edges of every b-tree.
// Opening runs it so that a database with a valid header but a damaged body
// fails to open, saying so, instead of opening and never being healthy.
var probeSQL = []string{
	`SELECT id FROM topics ORDER BY id LIMIT 1`,
	`SELECT id FROM topics ORDER BY id DESC LIMIT 1`,
	`SELECT name FROM topics ORDER BY name LIMIT 1`,
	`SELECT seq, payload FROM events ORDER BY seq LIMIT 1`,
	`SELECT seq, payload FROM events ORDER BY seq DESC LIMIT 1`,
	`SELECT topic_id, event_id FROM events ORDER BY topic_id, event_id LIMIT 1`,
	`SELECT topic_id, seq FROM events INDEXED BY events_topic_seq ORDER BY topic_id, seq LIMIT 1`,
}

// probe runs probeSQL on c.
func probe(c *sqlite3.Conn) error {
	for _, q := range probeSQL {
		stmt, _, err := c.Prepare(q)
		if err != nil {
			return err
		}
		for stmt.Step() {
		}
		if err := errors.Join(stmt.Err(), stmt.Close()); err != nil {
			return err
		}
	}
	return nil
}
