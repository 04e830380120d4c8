package eventagg

import "hash/maphash"

// keyCache remembers, for keys the writer committed or found stored, a
// digest of the stored copy's payload, so that a resend, which usually
// follows its first copy closely, is judged a duplicate or a conflict
// without a query. A stored copy never changes, so an entry stays true
// whoever wrote the key (another process included), until the key leaves
// by retention: Expire forgets the keys it removes, and a write transaction
// that finds keys removed by another process clears the cache. It is bounded:
// when the current generation is full it becomes the previous one, and the
// one before is dropped. It belongs to the writer: s.mu guards it.
type keyCache struct {
	seeds     [2]maphash.Seed
	cur, prev map[Key]digest
	max       int // entries per generation
}

// digest is 128 bits of seeded hashes of a payload: two payloads with the
// same digest are taken to be the same bytes.
type digest [2]uint64

// keyCacheSize is how many keys a generation of the writer's cache holds:
// at most twice as many are remembered, in about 100 bytes each.
const keyCacheSize = 1 << 16

func newKeyCache(max int) *keyCache {
	return &keyCache{
		seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		cur:   make(map[Key]digest),
		max:   max,
	}
}

func (c *keyCache) digest(p []byte) digest {
	return digest{maphash.Bytes(c.seeds[0], p), maphash.Bytes(c.seeds[1], p)}
}

// get returns the digest of the stored copy of k, if remembered.
func (c *keyCache) get(k Key) (digest, bool) {
	if d, ok := c.cur[k]; ok {
		return d, true
	}
	d, ok := c.prev[k]
	return d, ok
}

// forget forgets k, whose key left the store.
func (c *keyCache) forget(k Key) {
	delete(c.cur, k)
	delete(c.prev, k)
}

// clear forgets every key: some may have left the store.
func (c *keyCache) clear() {
	clear(c.cur)
	c.prev = nil
}

// add remembers that k is stored with a payload of digest d.
func (c *keyCache) add(k Key, d digest) {
	if len(c.cur) >= c.max {
		c.prev, c.cur = c.cur, make(map[Key]digest, c.max)
	}
	c.cur[k] = d
}
