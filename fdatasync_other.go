//go:build !linux

package eventagg

import "os"

// fdatasync flushes f to disk; outside Linux it is a full fsync.
func fdatasync(f *os.File) error { return f.Sync() }
