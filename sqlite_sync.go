package eventagg

import (
	"fmt"
	"os"
	"sync"
)

// walSyncer makes SyncFull commits durable off the writer's path.
//
// The writer commits with synchronous=NORMAL, which writes the transaction's
// frames to the write-ahead log without an fsync, registers the commit, and
// goes on with the next transaction. The syncer fsyncs the log file: every
// commit registered before an fsync began is then on disk, and its waiters
// are woken. A transaction is acknowledged only after that, so "acknowledged
// means durable" holds as with synchronous=FULL, while the fsync of one
// transaction overlaps the work of the next.
//
// This relies on SQLite's WAL format: frames are appended in commit order and
// carry cumulative checksums, and recovery keeps every transaction whose
// commit frame is intact, so an fsync of the log file makes every transaction
// written before it durable. At checkpoints and when the log restarts,
// synchronous=NORMAL still makes SQLite fsync the log and the database itself.
//
// An fsync error is sticky: after it, which writes reached the disk is
// unknown (the kernel may have dropped the dirty pages), so every later wait
// fails too, and the store must be reopened.
type walSyncer struct {
	path  string               // the WAL file
	fsync func(*os.File) error // fdatasync; tests replace it
	file  *os.File             // opened at the first sync

	mu        sync.Mutex
	cond      sync.Cond
	committed uint64        // commits registered
	synced    uint64        // commits known durable
	err       error         // sticky fsync error
	started   uint64        // commits covered by the fsync under way, or by the last
	queued    chan struct{} // while a commit waits for an fsync to start: closed when one does
	closing   bool
	exited    chan struct{}
}

func newWALSyncer(dbPath string) *walSyncer {
	w := &walSyncer{path: dbPath + "-wal", fsync: fdatasync, exited: make(chan struct{})}
	w.cond.L = &w.mu
	go w.run()
	return w
}

// committed registers a commit that has returned, and returns its ticket.
func (w *walSyncer) commit() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.committed++
	w.cond.Broadcast()
	return w.committed
}

// wait returns nil once the commit with ticket t is durable, or the fsync
// error that makes it unknown.
func (w *walSyncer) wait(t uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.synced < t && w.err == nil {
		w.cond.Wait()
	}
	if w.synced >= t {
		return nil
	}
	return w.err
}

// syncing returns, while a commit waits for an fsync that has not started
// (the one under way began before it), a channel closed when that fsync
// starts; nil otherwise. A further commit made meanwhile would wait for the
// same fsync, so the writer gathers calls until then instead, and each fsync
// covers one commit as large as the load allows, while the next commit
// overlaps it.
func (w *walSyncer) syncing() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.committed == w.started {
		return nil
	}
	if w.queued == nil {
		w.queued = make(chan struct{})
	}
	return w.queued
}

// failed returns the sticky fsync error, if any.
func (w *walSyncer) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *walSyncer) run() {
	defer close(w.exited)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for w.synced == w.committed && !w.closing && w.err == nil {
			w.cond.Wait()
		}
		if w.err != nil || w.synced == w.committed {
			return // closing with nothing left to sync, or failed for good
		}
		target := w.committed
		w.started = target
		if w.queued != nil {
			close(w.queued)
			w.queued = nil
		}
		w.mu.Unlock()
		err := w.syncFile()
		w.mu.Lock()
		if err != nil {
			w.err = fmt.Errorf("eventagg: fsync of %s failed; acknowledged writes may be lost, reopen the store: %w", w.path, err)
		} else {
			w.synced = target
		}
		w.cond.Broadcast()
	}
}

func (w *walSyncer) syncFile() error {
	if w.file == nil {
		f, err := os.OpenFile(w.path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		w.file = f
	}
	return w.fsync(w.file)
}

// close syncs what is registered, stops the syncer and closes the file.
// It returns the sticky error, if any.
func (w *walSyncer) close() error {
	w.mu.Lock()
	w.closing = true
	w.cond.Broadcast()
	w.mu.Unlock()
	<-w.exited
	var err error
	if w.file != nil {
		err = w.file.Close()
	}
	if ferr := w.failed(); ferr != nil {
		return ferr
	}
	return err
}
