package eventagg

import (
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
// After each fsync the syncer checks that the log is still the file at its
// path (see sqliteFiles): a log deleted or replaced under the store would
// lose what it holds at the next open, so its commits are not acknowledged.
//
// An fsync error is sticky: after it, which writes reached the disk is
// unknown (the kernel may have dropped the dirty pages), so every later wait
// fails too, and the store must be reopened. So is a failed check. Both are
// recorded as the store's fault (ErrDamaged).
type walSyncer struct {
	file  *os.File             // the WAL file
	fsync func(*os.File) error // fdatasync; tests replace it
	// check runs after each fsync, before the commits it covers are
	// acknowledged: it fails if the log is no longer the file at its path.
	check func() error
	fault *fault // the store's; an fsync or check error is recorded there

	mu        sync.Mutex
	cond      sync.Cond
	committed uint64        // commits registered
	synced    uint64        // commits known durable
	err       error         // sticky: fsync or check error
	started   uint64        // commits covered by the fsync under way, or by the last
	queued    chan struct{} // while a commit waits for an fsync to start: closed when one does
	closing   bool
	exited    chan struct{}
}

func newWALSyncer(file *os.File, check func() error, f *fault) *walSyncer {
	w := &walSyncer{file: file, fsync: fdatasync, check: check, fault: f, exited: make(chan struct{})}
	w.cond.L = &w.mu
	go w.run()
	return w
}

// register registers a commit that has returned, and returns its ticket.
func (w *walSyncer) register() uint64 {
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

// failed returns the sticky fsync or check error, if any.
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
		fsync := w.fsync
		w.mu.Unlock()
		err := fsync(w.file)
		if err != nil {
			err = w.fault.set(damaged("fsync of %s failed, so writes may not have reached the disk: %w", w.file.Name(), err))
		} else {
			err = w.check() // records a failure as the fault itself
		}
		w.mu.Lock()
		if err != nil {
			w.err = err
		} else {
			w.synced = target
		}
		w.cond.Broadcast()
	}
}

// close syncs what is registered and stops the syncer. It returns the
// sticky error, if any. The file stays open: it is the store's.
func (w *walSyncer) close() error {
	w.mu.Lock()
	w.closing = true
	w.cond.Broadcast()
	w.mu.Unlock()
	<-w.exited
	return w.failed()
}
