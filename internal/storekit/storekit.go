// Package storekit holds the logic that the stores of this module and the
// exported helpers of package driver share. It knows nothing of package
// eventagg's types (which import it), hence the type parameters.
package storekit

import (
	"crypto/sha256"
	"iter"
	"slices"
	"time"
)

// Paginate yields what fetch returns, page by page: fetch appends to dst up
// to n items with a sequence number above after, in order, and may stop
// early once their sizes reach pageBytes. Paginate starts after after,
// stops after limit items (when positive) or at the first page short of
// both bounds, and yields fetch's error, if any, once and last. seq and size
// read an item's sequence number and size. The page buffer is cleared as it
// is yielded, so that it keeps nothing alive between pages.
func Paginate[E any](after int64, limit, pageSize, pageBytes int, fetch func(dst []E, after int64, n int) ([]E, error),
	seq func(*E) int64, size func(*E) int) iter.Seq2[E, error] {
	return func(yield func(E, error) bool) {
		after, left := max(after, 0), limit
		var page []E
		var zero E
		for {
			n := pageSize
			if limit > 0 {
				if left <= 0 {
					return
				}
				n = min(n, left)
			}
			var err error
			if page, err = fetch(page[:0], after, n); err != nil {
				clear(page)
				yield(zero, err)
				return
			}
			bytes := 0
			for i := range page {
				e := page[i]
				page[i] = zero
				bytes += size(&e)
				after = seq(&e)
				if !yield(e, nil) {
					return
				}
			}
			if len(page) == 0 || (len(page) < n && bytes < pageBytes) {
				return
			}
			left -= len(page)
		}
	}
}

// FirstInBatch reports, for each of n items, whether it is the first with its
// key.
func FirstInBatch[K comparable](n int, key func(i int) K) []bool {
	first := make([]bool, n)
	if n == 1 {
		first[0] = true
		return first
	}
	seen := make(map[K]struct{}, n)
	for i := range n {
		k := key(i)
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			first[i] = true
		}
	}
	return first
}

// SelectNames returns the entries of all whose names sort after after, at
// most limit of them (none if limit is not positive), in a new map.
func SelectNames[V any](all map[string]V, after string, limit int) map[string]V {
	page := make(map[string]V, min(max(limit, 0), len(all)))
	if limit <= 0 {
		return page
	}
	names := make([]string, 0, len(all))
	for name := range all {
		if name > after {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names[:min(len(names), limit)] {
		page[name] = all[name]
	}
	return page
}

// HashSize is the length of a PayloadHash.
const HashSize = 16

// PayloadHash returns the digest by which stores compare a payload with the
// stored copy's: the first 16 bytes of its SHA-256. Two payloads with the
// same digest are taken to be the same bytes.
func PayloadHash(p []byte) []byte {
	sum := sha256.Sum256(p)
	return sum[:HashSize]
}

// FromNanos returns the UTC time ns nanoseconds after the Unix epoch, as
// stores read timestamps back.
func FromNanos(ns int64) time.Time { return time.Unix(0, ns).UTC() }
