// Package powerfs is an in-memory FUSE filesystem that can lose power, so that
// a test can check what a program's fsyncs really made durable.
//
// Every file keeps two contents: what was written, which reads see, and what
// was durable at its last fsync. An fsync or fdatasync through any open
// handle of a file makes that whole file's current content durable, as POSIX
// has it (fsync is per file, not per descriptor). [FS.Cut] is a power cut
// and a reboot: every file goes back to its durable content (a file never
// fsynced comes back empty), and the kernel's page cache is dropped with the
// mount.
//
// Simplifications: namespace operations (create, unlink, rename) are durable
// at once, as if every directory were fsynced after each; a cut keeps none of
// what was written after a file's last fsync, where a real disk may keep some
// of it (torn writes are not modelled). The filesystem is one flat directory:
// regular files only, no subdirectories, links or extended attributes.
//
// Data goes through the kernel's page cache (no direct I/O), so shared
// writable mmap works, as SQLite's -shm file needs; POSIX and OFD locks are
// left to the kernel, which enforces them between the processes using the
// mount. Mounting needs root and /dev/fuse, but no fusermount binary.
//
// The process that mounts the filesystem serves it, so it must not mmap its
// files (SQLite does, for -shm): a page fault on the mount holds one of the
// Go scheduler's Ps until the mount answers, and a garbage collection that
// stops the world waits for that P, while the goroutine that would answer
// waits for a P: the process deadlocks. Run such programs in a child
// process; plain reads, writes and locks from this process are safe, since a
// P is released during a system call.
package powerfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// pageSize is the unit in which writes since the last fsync are tracked.
const pageSize = 4096

// FS is a mounted powerfs filesystem. Its methods are safe for concurrent use.
type FS struct {
	dir string

	mountMu sync.Mutex   // serialises mounting and unmounting
	server  *fuse.Server // nil while unmounted

	mu      sync.Mutex // guards what follows, and every file
	files   map[string]*file
	nextIno uint64
	frozen  bool
}

// file is one regular file's contents.
type file struct {
	ino     uint64
	mode    uint32 // permission bits
	mtime   time.Time
	linked  bool           // false once unlinked or renamed over
	data    []byte         // what was written: reads see it
	durable []byte         // the content at the last fsync: a cut reverts to it
	dirty   map[int64]bool // pages of data written since the last fsync
	shrunk  int64          // the least length data had since the last fsync
	fsyncs  int            // fsync and fdatasync calls that succeeded
}

// Available returns nil if this process can mount a powerfs filesystem, or
// why it cannot: mounting needs /dev/fuse and root.
func Available() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("powerfs needs /dev/fuse: %w", err)
	}
	if os.Geteuid() != 0 {
		return errors.New("powerfs needs root to mount without fusermount")
	}
	return nil
}

// Mount mounts an empty powerfs filesystem on the existing directory dir.
// Call Unmount when done.
func Mount(dir string) (*FS, error) {
	fsys := &FS{dir: dir, files: make(map[string]*file), nextIno: 2}
	if err := fsys.mount(); err != nil {
		return nil, err
	}
	return fsys, nil
}

func (fsys *FS) mount() error {
	fsys.mountMu.Lock()
	defer fsys.mountMu.Unlock()
	server, err := fs.Mount(fsys.dir, &root{fsys: fsys}, &fs.Options{
		MountOptions: fuse.MountOptions{
			DirectMountStrict: true, // mount(2) itself: no fusermount
			FsName:            "powerfs",
			Name:              "powerfs",
			DisableXAttrs:     true,
			// The kernel is the only writer, so its page cache is
			// never stale while mounted; a cut remounts.
			ExplicitDataCacheControl: true,
		},
	})
	if err != nil {
		return fmt.Errorf("powerfs: mount %s: %w", fsys.dir, err)
	}
	fsys.server = server
	return nil
}

// Unmount unmounts the filesystem; the files' contents are gone with fsys.
// It does nothing if fsys is not mounted. If a file is still open, it
// detaches the mount lazily, so that no later user of the directory hangs
// on it, and returns the error.
func (fsys *FS) Unmount() error {
	err := fsys.unmount()
	if err != nil {
		if derr := unix.Unmount(fsys.dir, unix.MNT_DETACH); derr != nil {
			err = errors.Join(err, fmt.Errorf("lazy unmount: %w", derr))
		}
	}
	return err
}

func (fsys *FS) unmount() error {
	fsys.mountMu.Lock()
	defer fsys.mountMu.Unlock()
	if fsys.server == nil {
		return nil
	}
	if err := fsys.server.Unmount(); err != nil {
		return fmt.Errorf("powerfs: unmount %s: %w", fsys.dir, err)
	}
	fsys.server = nil
	return nil
}

// Freeze makes every later write, truncation, allocation, fsync, create,
// unlink and rename fail with EIO, as on a disk that lost power; reads go on.
// An fsync under way when Freeze is called either completed before it
// returns, or fails.
func (fsys *FS) Freeze() {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	fsys.frozen = true
}

// Thaw undoes Freeze.
func (fsys *FS) Thaw() {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	fsys.frozen = false
}

// Cut is a power cut and a reboot: it unmounts the filesystem, which drops
// the kernel's page cache, reverts every file to its content at its last
// fsync (empty if never fsynced), and mounts it again. It returns the names
// of the files whose content changed since their last fsync, which lost that
// change. No process may have a file open on the mount: call Freeze, then
// kill them. On error fsys may be left unmounted.
func (fsys *FS) Cut() (reverted []string, err error) {
	if err := fsys.unmount(); err != nil {
		return nil, err
	}
	fsys.mu.Lock()
	for name, f := range fsys.files {
		if len(f.dirty) > 0 || int64(len(f.durable)) != f.shrunk || len(f.data) != len(f.durable) {
			reverted = append(reverted, name)
		}
		f.revert()
	}
	fsys.mu.Unlock()
	slices.Sort(reverted)
	return reverted, fsys.mount()
}

// Fsyncs returns how many fsync and fdatasync calls succeeded on the file
// now named name, through any handle; 0 if there is no such file.
func (fsys *FS) Fsyncs(name string) int {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if f := fsys.files[name]; f != nil {
		return f.fsyncs
	}
	return 0
}

// write stores p at off, growing the file as needed.
func (f *file) write(p []byte, off int64) {
	end := off + int64(len(p))
	if end > int64(len(f.data)) {
		f.resize(end)
	}
	copy(f.data[off:], p)
	for pg := off / pageSize; pg*pageSize < end; pg++ {
		f.dirty[pg] = true
	}
	f.mtime = time.Now()
}

// resize truncates or zero-extends the file to n bytes.
func (f *file) resize(n int64) {
	if old := int64(len(f.data)); n <= old {
		f.data = f.data[:n]
		f.shrunk = min(f.shrunk, n)
	} else {
		f.data = slices.Grow(f.data, int(n-old))[:n]
		clear(f.data[old:])
	}
	f.mtime = time.Now()
}

// sync makes the current content durable, copying only what changed.
func (f *file) sync() {
	n := int64(len(f.data))
	// Past f.shrunk the durable content was cut off at some point; what
	// is there now was either written since (dirty) or zero-extended.
	keep := min(int64(len(f.durable)), f.shrunk)
	d := slices.Grow(f.durable[:keep], int(n-keep))[:n]
	clear(d[keep:])
	for pg := range f.dirty {
		lo := pg * pageSize
		if lo < n {
			hi := min(lo+pageSize, n)
			copy(d[lo:hi], f.data[lo:hi])
		}
	}
	f.durable = d
	clear(f.dirty)
	f.shrunk = n
}

// revert brings the file back to its durable content.
func (f *file) revert() {
	f.data = bytes.Clone(f.durable)
	clear(f.dirty)
	f.shrunk = int64(len(f.data))
}

func (f *file) attr(a *fuse.Attr) {
	a.Ino = f.ino
	a.Mode = syscall.S_IFREG | f.mode
	a.Size = uint64(len(f.data))
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = pageSize
	a.Nlink = 0
	if f.linked {
		a.Nlink = 1
	}
	a.SetTimes(nil, &f.mtime, &f.mtime)
}

// root is the filesystem's only directory. A new one serves each mount.
type root struct {
	fs.Inode
	fsys *FS
}

var (
	_ fs.NodeLookuper  = (*root)(nil)
	_ fs.NodeReaddirer = (*root)(nil)
	_ fs.NodeCreater   = (*root)(nil)
	_ fs.NodeUnlinker  = (*root)(nil)
	_ fs.NodeRenamer   = (*root)(nil)
	_ fs.NodeFsyncer   = (*root)(nil)
)

// inode returns the kernel-facing node of f (go-fuse keeps one per inode number).
func (r *root) inode(ctx context.Context, f *file) *fs.Inode {
	return r.NewInode(ctx, &node{fsys: r.fsys, f: f}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: f.ino})
}

func (r *root) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	r.fsys.mu.Lock()
	defer r.fsys.mu.Unlock()
	f := r.fsys.files[name]
	if f == nil {
		return nil, syscall.ENOENT
	}
	f.attr(&out.Attr)
	return r.inode(ctx, f), 0
}

func (r *root) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	r.fsys.mu.Lock()
	defer r.fsys.mu.Unlock()
	entries := make([]fuse.DirEntry, 0, len(r.fsys.files))
	for name, f := range r.fsys.files {
		entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: f.ino})
	}
	slices.SortFunc(entries, func(a, b fuse.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return fs.NewListDirStream(entries), 0
}

func (r *root) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	r.fsys.mu.Lock()
	defer r.fsys.mu.Unlock()
	if r.fsys.frozen {
		return nil, nil, 0, syscall.EIO
	}
	f := r.fsys.files[name]
	switch {
	case f != nil && flags&syscall.O_EXCL != 0:
		return nil, nil, 0, syscall.EEXIST
	case f == nil:
		f = &file{ino: r.fsys.nextIno, mode: mode & 07777, mtime: time.Now(), linked: true, dirty: make(map[int64]bool)}
		r.fsys.nextIno++
		r.fsys.files[name] = f
	}
	f.attr(&out.Attr)
	return r.inode(ctx, f), nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (r *root) Unlink(ctx context.Context, name string) syscall.Errno {
	r.fsys.mu.Lock()
	defer r.fsys.mu.Unlock()
	if r.fsys.frozen {
		return syscall.EIO
	}
	f := r.fsys.files[name]
	if f == nil {
		return syscall.ENOENT
	}
	f.linked = false
	delete(r.fsys.files, name)
	return 0
}

func (r *root) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if newParent.EmbeddedInode() != r.EmbeddedInode() {
		return syscall.EXDEV
	}
	r.fsys.mu.Lock()
	defer r.fsys.mu.Unlock()
	if r.fsys.frozen {
		return syscall.EIO
	}
	files := r.fsys.files
	f, g := files[name], files[newName]
	switch {
	case f == nil:
		return syscall.ENOENT
	case flags&unix.RENAME_EXCHANGE != 0:
		if g == nil {
			return syscall.ENOENT
		}
		files[name], files[newName] = g, f
	case g != nil && flags&unix.RENAME_NOREPLACE != 0:
		return syscall.EEXIST
	case flags&^unix.RENAME_NOREPLACE != 0:
		return syscall.EINVAL
	default:
		if g != nil && g != f {
			g.linked = false
		}
		delete(files, name)
		files[newName] = f
	}
	return 0
}

// Fsync of the directory: namespace operations are durable at once.
func (r *root) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	r.fsys.mu.Lock()
	defer r.fsys.mu.Unlock()
	if r.fsys.frozen {
		return syscall.EIO
	}
	return 0
}

// node is a regular file as one mount's kernel sees it.
type node struct {
	fs.Inode
	fsys *FS
	f    *file
}

var (
	_ fs.NodeOpener    = (*node)(nil)
	_ fs.NodeGetattrer = (*node)(nil)
	_ fs.NodeSetattrer = (*node)(nil)
	_ fs.NodeReader    = (*node)(nil)
	_ fs.NodeWriter    = (*node)(nil)
	_ fs.NodeFsyncer   = (*node)(nil)
	_ fs.NodeAllocater = (*node)(nil)
)

// Open keeps the page cache: only this mount's kernel changes the data.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fsys.mu.Lock()
	defer n.fsys.mu.Unlock()
	n.f.attr(&out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	n.fsys.mu.Lock()
	defer n.fsys.mu.Unlock()
	if size, ok := in.GetSize(); ok {
		if n.fsys.frozen {
			return syscall.EIO
		}
		n.f.resize(int64(size))
	}
	if mode, ok := in.GetMode(); ok {
		n.f.mode = mode & 07777
	}
	if mtime, ok := in.GetMTime(); ok {
		n.f.mtime = mtime
	}
	n.f.attr(&out.Attr)
	return 0
}

func (n *node) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.fsys.mu.Lock()
	defer n.fsys.mu.Unlock()
	if off >= int64(len(n.f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	k := copy(dest, n.f.data[off:]) // dest belongs to the request: no aliasing of data
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *node) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	n.fsys.mu.Lock()
	defer n.fsys.mu.Unlock()
	if n.fsys.frozen {
		return 0, syscall.EIO
	}
	n.f.write(data, off)
	return uint32(len(data)), 0
}

// Fsync makes the whole file durable, whichever handle it comes through; the
// kernel has sent the file's dirty pages (mmap included) before it.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	n.fsys.mu.Lock()
	defer n.fsys.mu.Unlock()
	if n.fsys.frozen {
		return syscall.EIO
	}
	n.f.sync()
	n.f.fsyncs++
	return 0
}

// Allocate supports plain fallocate (zero-extends the file) and
// FALLOC_FL_KEEP_SIZE (nothing to do in memory); other modes get EOPNOTSUPP.
func (n *node) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	n.fsys.mu.Lock()
	defer n.fsys.mu.Unlock()
	if n.fsys.frozen {
		return syscall.EIO
	}
	switch mode {
	case 0:
		if end := int64(off + size); end > int64(len(n.f.data)) {
			n.f.resize(end)
		}
	case unix.FALLOC_FL_KEEP_SIZE:
	default:
		return syscall.EOPNOTSUPP
	}
	return 0
}
