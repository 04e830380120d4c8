package powerfs

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// mountForTest mounts a powerfs filesystem for the test and unmounts it at
// the end. Without FUSE it skips, or fails under CI.
func mountForTest(t *testing.T) (*FS, string) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v (CI must be able to run this test)", err)
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	fsys, err := Mount(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fsys.Unmount(); err != nil {
			t.Error(err)
		}
	})
	return fsys, dir
}

func cut(t *testing.T, fsys *FS, want ...string) {
	t.Helper()
	reverted, err := fsys.Cut()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(reverted, want) {
		t.Errorf("Cut() reverted %q, want %q", reverted, want)
	}
}

func wantContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s holds %q, want %q", filepath.Base(path), got, want)
	}
}

func TestFsyncIsPerFileAndCutKeepsOnlyTheSynced(t *testing.T) {
	fsys, dir := mountForTest(t)
	path := filepath.Join(dir, "f")
	a, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteString("durable"); err != nil {
		t.Fatal(err)
	}
	// An fdatasync through another handle covers what a wrote.
	if err := unix.Fdatasync(int(b.Fd())); err != nil {
		t.Fatal(err)
	}
	if n := fsys.Fsyncs("f"); n != 1 {
		t.Errorf("Fsyncs = %d, want 1", n)
	}
	if _, err := a.WriteString(" and not"); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, []byte("durable and not"))

	fsys.Freeze()
	if _, err := a.WriteString("!"); !errors.Is(err, syscall.EIO) {
		t.Errorf("write while frozen: %v, want EIO", err)
	}
	if err := a.Sync(); !errors.Is(err, syscall.EIO) {
		t.Errorf("fsync while frozen: %v, want EIO", err)
	}
	if err := a.Truncate(0); !errors.Is(err, syscall.EIO) {
		t.Errorf("truncate while frozen: %v, want EIO", err)
	}
	a.Close()
	b.Close()
	cut(t, fsys, "f")
	fsys.Thaw()
	wantContent(t, path, []byte("durable"))
}

func TestNamespaceIsDurableAtOnce(t *testing.T) {
	fsys, dir := mountForTest(t)
	for _, name := range []string{"never-synced", "renamed", "victim"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(filepath.Join(dir, "renamed"), filepath.Join(dir, "moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "victim")); err != nil {
		t.Fatal(err)
	}
	cut(t, fsys, "moved", "never-synced")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"moved", "never-synced"}) {
		t.Errorf("after the cut the directory holds %q", names)
	}
	wantContent(t, filepath.Join(dir, "never-synced"), nil) // never fsynced: empty
}

func TestTruncateAndExtend(t *testing.T) {
	fsys, dir := mountForTest(t)
	path := filepath.Join(dir, "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	full := bytes.Repeat([]byte("a"), 3*pageSize)
	f.Write(full)
	f.Sync()
	// Cut in the middle of a page, then grow again: the tail reads zeros.
	f.Truncate(pageSize + 100)
	if err := unix.Fallocate(int(f.Fd()), 0, 0, 3*pageSize); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte("a"), pageSize+100), make([]byte, 2*pageSize-100)...)
	wantContent(t, path, want)
	f.Sync()
	f.Truncate(10) // not synced: the cut undoes it
	f.Close()
	cut(t, fsys, "f")
	wantContent(t, path, want)
}

func TestLocksAreEnforced(t *testing.T) {
	_, dir := mountForTest(t)
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a, _ := os.OpenFile(path, os.O_RDWR, 0)
	defer a.Close()
	b, _ := os.OpenFile(path, os.O_RDWR, 0)
	defer b.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 128, Len: 1}
	if err := unix.FcntlFlock(a.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	lk = unix.Flock_t{Type: unix.F_RDLCK, Start: 128, Len: 1}
	if err := unix.FcntlFlock(b.Fd(), unix.F_OFD_SETLK, &lk); !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("a read lock over another handle's write lock: %v, want EAGAIN", err)
	}
}

// TestSharedMmap maps a file of the mount twice, from a child process:
// this process serves the mount, and must not fault on its pages (see the
// package doc). What one mapping writes the other reads, an fsync makes it
// durable, and what is written through a mapping after that is lost in a cut.
func TestSharedMmap(t *testing.T) {
	if dir := os.Getenv("POWERFS_MMAP_DIR"); dir != "" {
		mmapChild(t, filepath.Join(dir, "f-shm"))
		return
	}
	fsys, dir := mountForTest(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestSharedMmap$")
	cmd.Env = append(os.Environ(), "POWERFS_MMAP_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the child process: %v\n%s", err, out)
	}
	cut(t, fsys, "f-shm")
	got, err := os.ReadFile(filepath.Join(dir, "f-shm"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2*pageSize || string(got[pageSize:pageSize+15]) != "through the map" || got[0] != 0 {
		t.Errorf("after the cut: %d bytes, %q at page 1, %q at 0; want 8192 bytes, the synced write only", len(got), got[pageSize:pageSize+15], got[0])
	}
}

func mmapChild(t *testing.T, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, 2*pageSize); err != nil {
		t.Fatal(err)
	}
	g, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	m1, err := unix.Mmap(int(f.Fd()), 0, 2*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m1)
	m2, err := unix.Mmap(int(g.Fd()), 0, 2*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m2)
	copy(m1[pageSize:], "through the map")
	if got := string(m2[pageSize : pageSize+15]); got != "through the map" {
		t.Errorf("the other mapping reads %q", got)
	}
	// fsync sends the dirty pages first, then makes them durable.
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	m2[0] = 'x' // never synced
}
