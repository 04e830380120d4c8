package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eventagg/eventagg/internal/powerfs"
	"golang.org/x/sys/unix"
)

// mountPowerFS mounts a powerfs filesystem on a new directory for the test,
// and unmounts it when the test ends, after the servers started on it were
// killed (cleanups run last registered first). Without FUSE (no /dev/fuse,
// or not root) it skips, but fails under CI.
func mountPowerFS(t *testing.T) (*powerfs.FS, string) {
	t.Helper()
	if err := powerfs.Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v: CI must run the power-cut tests", err)
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	fsys, err := powerfs.Mount(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fsys.Unmount(); err != nil {
			t.Errorf("unmounting the powerfs filesystem: %v", err)
		}
	})
	return fsys, dir
}

// load is publishers sending to one server until the power is cut.
type load struct {
	stop chan struct{} // closed just before the cut
	done chan struct{} // closed once every publisher has returned
}

// startLoad starts publishers against url and returns once warmup more
// requests have been answered 200.
func (l *ledger) startLoad(t *testing.T, url string, rng *rand.Rand, publishers, maxBatch, warmup int, round string) *load {
	t.Helper()
	l.mu.Lock()
	warmup += l.ackedBodies
	l.mu.Unlock()
	ld := &load{stop: make(chan struct{}), done: make(chan struct{})}
	warm, wait := l.publishUntil(t, url, rng, publishers, maxBatch, warmup, round, ld.stop, nil)
	go func() { wait(); close(ld.done) }()
	select {
	case <-warm:
	case <-ld.done:
		t.Fatalf("%s: the publishers stopped before %d requests were acknowledged", round, warmup)
	}
	return ld
}

// cutPower cuts the power under the server c while ld runs: the filesystem
// freezes (every later write and fsync fails with EIO, as with no power),
// the server is SIGKILLed, and the filesystem comes back with only what was
// fsynced, its page cache dropped. It returns the files that lost writes.
func cutPower(t *testing.T, fsys *powerfs.FS, c *child, ld *load) (reverted []string) {
	t.Helper()
	close(ld.stop) // from here on, failed publishes are expected
	fsys.Freeze()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.wait()
	<-ld.done
	reverted, err := fsys.Cut()
	if err != nil {
		t.Fatalf("power cut: %v", err)
	}
	fsys.Thaw()
	return reverted
}

// serverHoldsLocks checks that SQLite's locks work on the mount: a server
// holds a read lock on the dead man's switch byte of the -shm file (byte 128
// in SQLite's unix VFS) for as long as it has the database open, so the
// kernel must report a write lock there as conflicting.
func serverHoldsLocks(t *testing.T, db string) {
	t.Helper()
	f, err := os.OpenFile(db+"-shm", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 128, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		t.Fatalf("F_OFD_GETLK on %s-shm: %v", db, err)
	}
	if lk.Type != unix.F_RDLCK {
		t.Errorf("F_OFD_GETLK on %s-shm byte 128 = lock type %d, want the server's read lock (%d)", db, lk.Type, unix.F_RDLCK)
	}
}

// integrityCheckCopy runs integrityCheck on a copy of db and its
// write-ahead log on a real disk. The database must not be opened on the
// mount by this process, which serves it: SQLite maps the -shm file, and a
// page fault on the mount can deadlock the process (see package powerfs).
// The copy is read through the mount, with plain reads.
func integrityCheckCopy(t *testing.T, db string) {
	t.Helper()
	dir := t.TempDir()
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(db + suffix)
		if suffix != "" && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(db)+suffix), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	integrityCheck(t, filepath.Join(dir, filepath.Base(db)))
}

// TestPowerCut runs the server on a powerfs filesystem and cuts the power
// under it at random moments while publishers run: nothing written after a
// file's last fsync survives. With -sync full no acknowledged event may be
// lost; the control shows that with -sync normal some are, so the test
// does see losses. go test -long makes more cuts.
func TestPowerCut(t *testing.T) {
	t.Run("SyncFull", testPowerCutSyncFull)
	t.Run("SyncNormalLoses", testPowerCutSyncNormalLoses)
}

func testPowerCutSyncFull(t *testing.T) {
	cuts, publishers, maxBatch, maxLife := 6, 4, 20, 250*time.Millisecond
	if long() {
		cuts, publishers, maxBatch, maxLife = 40, 16, 50, 1500*time.Millisecond
	}
	fsys, dir := mountPowerFS(t)
	db := filepath.Join(dir, "events.db")
	rng := rand.New(rand.NewPCG(testSeed(t), 4))
	l := newLedger()
	start := time.Now()
	walSyncs, checkpoints := 0, 0
	for cut := range cuts {
		c := startChild(t, db)
		stored := l.verify(t, c.url)
		if cut == 0 {
			serverHoldsLocks(t, db)
		}
		syncsBefore, ckptBefore := fsys.Fsyncs("events.db-wal"), fsys.Fsyncs("events.db")
		l.mu.Lock()
		ackedBefore := l.ackedBodies
		l.mu.Unlock()

		ld := l.startLoad(t, c.url, rng, publishers, maxBatch, 1, "cut"+fmt.Sprint(cut))
		time.Sleep(time.Duration(rng.Int64N(int64(maxLife)))) // a random moment for the cut
		reverted := cutPower(t, fsys, c, ld)

		// Every 200 waited for an fsync of the WAL by the store: the
		// filesystem must have seen them.
		synced := fsys.Fsyncs("events.db-wal") - syncsBefore
		walSyncs += synced
		l.mu.Lock()
		acked := l.ackedBodies - ackedBefore
		l.mu.Unlock()
		if synced == 0 {
			t.Errorf("cut %d: %d requests answered 200, but no fsync of events.db-wal reached the filesystem", cut, acked)
		}
		ckpts := fsys.Fsyncs("events.db") - ckptBefore // SQLite fsyncs the database file at checkpoints
		checkpoints += ckpts
		t.Logf("cut %d: %d events stored before, %d requests answered 200, %d WAL fsyncs, %d database fsyncs; the cut reverted %s",
			cut, stored, acked, synced, ckpts, strings.Join(reverted, ", "))
	}
	c := startChild(t, db)
	stored := l.verify(t, c.url)
	c.terminate(t)
	integrityCheckCopy(t, db)
	t.Logf("%d power cuts in %v: %d requests answered 200 carrying %d events (%d distinct), %d events sent, %d stored, %d WAL fsyncs, %d database fsyncs; missing 0, stored twice 0",
		cuts, time.Since(start).Round(time.Millisecond), l.ackedBodies, l.ackedCount.Received, len(l.acked), l.sentEvents, stored, walSyncs, checkpoints)
}

// testPowerCutSyncNormalLoses is the control: with -sync normal the WAL is
// fsynced only at checkpoints, so a power cut right after some 200s, before
// any checkpoint, must lose acknowledged events. The store stays consistent.
func testPowerCutSyncNormalLoses(t *testing.T) {
	const cuts, publishers, maxBatch, warmup = 2, 4, 20, 20
	fsys, dir := mountPowerFS(t)
	rng := rand.New(rand.NewPCG(testSeed(t), 5))
	for cut := range cuts {
		name := fmt.Sprintf("control%d.db", cut)
		db := filepath.Join(dir, name)
		l := newLedger()
		c := startChild(t, db, "-sync", "normal")
		dbSyncs := fsys.Fsyncs(name)
		ld := l.startLoad(t, c.url, rng, publishers, maxBatch, warmup, "control"+fmt.Sprint(cut))
		reverted := cutPower(t, fsys, c, ld) // right after the 200s
		if fsys.Fsyncs(name) != dbSyncs {
			t.Fatalf("cut %d: the database was fsynced (a checkpoint ran) before the cut: the control proves nothing", cut)
		}

		c = startChild(t, db, "-sync", "normal")
		a := l.audit(t, c.url)
		for _, p := range a.wrong { // what survived must still be consistent
			t.Error(p)
		}
		if a.missing == 0 {
			t.Errorf("cut %d: -sync normal lost none of %d acknowledged events in a power cut; the test cannot see a loss", cut, len(l.acked))
		}
		c.terminate(t)
		integrityCheckCopy(t, db)
		t.Logf("control cut %d (-sync normal): %d requests answered 200 carrying %d distinct events; after the cut %d stored, %d acknowledged lost; the cut reverted %s",
			cut, l.ackedBodies, len(l.acked), a.stored, a.missing, strings.Join(reverted, ", "))
	}
}
