package eventagg

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// openCheckpointConn opens the checkpointer's connection. It reads the
// database once: a connection that has never read it does not know it is in
// WAL mode, and its checkpoints do nothing (SQLite answers them with -1
// frames and no error).
func (s *SQLiteStore) openCheckpointConn() (*sqlite3.Conn, error) {
	c, err := s.openConn(0)
	if err != nil {
		return nil, err
	}
	if err := c.Exec(`SELECT count(*) FROM sqlite_schema`); err != nil {
		closeConn(c)
		return nil, err
	}
	return c, nil
}

// ckptResult is what a checkpoint did: the frames in the log and those
// copied into the database, or why it failed.
type ckptResult struct {
	log, copied int
	err         error
}

// checkpointer copies the WAL into the database without blocking the writer
// or readers (PASSIVE), on its own connection c, until Close: when the writer
// asks (the log passed the threshold), and when writes pause for
// opts.ckptIdle with frames not yet copied. With c nil (exclusive mode) it
// checkpoints on the writer's connection, under s.mu.
func (s *SQLiteStore) checkpointer(c *sqlite3.Conn) {
	defer close(s.ckptExited)
	defer closeConn(c)
	tick := time.NewTicker(s.opts.ckptIdle)
	defer tick.Stop()
	// Commits counted at the last tick, and before the last checkpoint that
	// copied the whole log: none when the store opened.
	var lastTick, clean uint64
	run := func() {
		n := s.commits.Load()
		if r := s.checkpoint(c); r.err == nil && r.log == r.copied {
			clean = n
		}
	}
	for {
		select {
		case <-s.done:
			return
		case <-s.ckpt:
			run()
		case <-tick.C:
			n := s.commits.Load()
			if n == lastTick && n != clean {
				run()
			}
			lastTick = n
		}
	}
}

// checkpoint runs one PASSIVE checkpoint and records its outcome.
func (s *SQLiteStore) checkpoint(c *sqlite3.Conn) ckptResult {
	var r ckptResult
	if c != nil {
		s.ckptMu.Lock()
		r.log, r.copied, r.err = c.WALCheckpoint("main", sqlite3.CHECKPOINT_PASSIVE)
		s.ckptMu.Unlock()
	} else {
		s.mu.Lock()
		if s.w == nil || s.closed() {
			s.mu.Unlock()
			return ckptResult{err: ErrClosed}
		}
		r.log, r.copied, r.err = s.w.WALCheckpoint("main", sqlite3.CHECKPOINT_PASSIVE)
		s.mu.Unlock()
	}
	if r.err == nil && r.log < 0 {
		r.err = errors.New("the checkpoint did not run: the connection does not see the database in WAL mode")
	}
	if errors.Is(r.err, sqlite3.BUSY) {
		// Another checkpoint is under way (the writer's, or another
		// process's): this one is not needed.
		r.err = nil
		r.log, r.copied = 0, -1
	} else {
		r.err = s.classify(r.err)
		s.ckptStats.note(s, r.err)
	}
	if s.opts.onCheckpoint != nil {
		s.opts.onCheckpoint(r)
	}
	return r
}

// ckptStats counts checkpoints and logs failures: the first of a run of
// failures, then at most one a minute, and the first success after them.
type ckptStats struct {
	done, failed atomic.Int64

	mu      sync.Mutex
	failing bool
	logged  time.Time
}

// note records the outcome of a checkpoint of s.
func (c *ckptStats) note(s *SQLiteStore, err error) {
	if err == nil {
		c.done.Add(1)
	} else {
		c.failed.Add(1)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx := context.Background()
	switch {
	case err == nil && c.failing:
		c.failing = false
		s.log.LogAttrs(ctx, slog.LevelInfo, "eventagg: SQLite checkpoints succeed again", slog.String("db", s.path))
	case err != nil && (!c.failing || time.Since(c.logged) >= time.Minute):
		c.failing, c.logged = true, time.Now()
		s.log.LogAttrs(ctx, slog.LevelError,
			"eventagg: SQLite checkpoint failed; the write-ahead log grows until one succeeds",
			slog.String("db", s.path), slog.Int64("wal_frames", s.walFrames.Load()),
			slog.Int64("failures", c.failed.Load()), slog.Any("error", err))
	}
}

// StoreMetrics implements [MetricsReporter]: the size of the write-ahead
// log, checkpoints done and failed, and whether the store is damaged.
func (s *SQLiteStore) StoreMetrics() []StoreMetric {
	damaged := 0.0
	if s.fault.get() != nil {
		damaged = 1
	}
	return []StoreMetric{
		{Name: "eventagg_sqlite_wal_bytes", Type: "gauge", Help: "Size of the SQLite write-ahead log file.", Value: float64(s.files.walSize())},
		{Name: "eventagg_sqlite_wal_frames", Type: "gauge", Help: "Pages in the SQLite write-ahead log after this process's last commit.", Value: float64(s.walFrames.Load())},
		{Name: "eventagg_sqlite_checkpoints_total", Type: "counter", Help: "Checkpoints that copied the write-ahead log into the database.", Value: float64(s.ckptStats.done.Load())},
		{Name: "eventagg_sqlite_checkpoint_failures_total", Type: "counter", Help: "Checkpoints that failed.", Value: float64(s.ckptStats.failed.Load())},
		{Name: "eventagg_sqlite_damaged", Type: "gauge", Help: "1 once the store found its files damaged and refuses writes until reopened; else 0.", Value: damaged},
	}
}
