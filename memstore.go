package eventagg

import (
	"bytes"
	"context"
	"iter"
	"maps"
	"sync"
	"time"

	"github.com/eventagg/eventagg/internal/storekit"
)

// MemoryStore is a [Store] that keeps everything in memory and nothing on disk.
// It suits tests and ephemeral use; its contents are lost when the process ends.
// It implements [Expirer] and [Claimer]. It is safe for concurrent use. The zero value is
// not usable: call [NewMemoryStore].
type MemoryStore struct {
	mu      sync.RWMutex
	events  []Event // in acceptance order; events[i].Seq == gone+i+1
	gone    int64   // events that left, all before events[0]
	keys    map[Key]*memKey
	kept    []Key // keys of events that left, kept for deduplication, in acceptance order
	topics  map[string]Counts
	nextSeq int64
	closed  bool

	claims        map[Key]memClaim // held, or lapsed and not taken over yet
	claimToken    int64            // the last token handed out
	claimsExpired int64            // claims taken over after their lease ran out
}

// memKey is what the store knows of a stored key.
type memKey struct {
	seq      int64
	accepted time.Time
	digest   []byte // of the payload, once the event left and the key stayed
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{keys: make(map[Key]*memKey), topics: make(map[string]Counts), claims: make(map[Key]memClaim)}
}

// stored returns the stored copy of k's payload, or its digest if the
// event left; ok is false if the key is not stored.
func (m *MemoryStore) stored(k *memKey) (payload, digest []byte) {
	if k.digest != nil {
		return nil, k.digest
	}
	return m.events[k.seq-m.gone-1].Payload, nil
}

// Append implements [Store.Append]. It copies each stored payload, so the
// caller may reuse its buffers. Payloads are compared byte for byte, or by
// digest for a key whose event left.
func (m *MemoryStore) Append(ctx context.Context, events []Event, opts AppendOptions) ([]Outcome, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	return m.appendLocked(events, opts)
}

// appendLocked is Append, m.mu held.
func (m *MemoryStore) appendLocked(events []Event, opts AppendOptions) ([]Outcome, error) {
	// First the outcomes, so that a rejected batch changes nothing.
	outcomes := make([]Outcome, len(events))
	first := make(map[Key]int) // index in events of the first copy of each new key
	for i := range events {
		k := events[i].Key()
		var same bool
		if sk, ok := m.keys[k]; ok {
			payload, digest := m.stored(sk)
			if digest != nil {
				same = bytes.Equal(digest, storekit.PayloadHash(events[i].Payload))
			} else {
				same = bytes.Equal(payload, events[i].Payload)
			}
		} else if j, ok := first[k]; ok {
			same = bytes.Equal(events[j].Payload, events[i].Payload)
		} else {
			first[k] = i
			outcomes[i] = Outcome{Status: Stored, Seq: m.nextSeq + int64(len(first))}
			continue
		}
		outcomes[i].Status = Duplicate
		if !same {
			if opts.RejectConflicts {
				return nil, &ConflictError{Index: i, Key: k}
			}
			outcomes[i].Status = Conflict
		}
	}
	accepted := opts.AcceptedAt
	if accepted.IsZero() {
		accepted = time.Now()
	}
	for i, o := range outcomes {
		if o.Status != Stored {
			continue
		}
		e := events[i]
		e.Timestamp = e.Timestamp.UTC()
		e.Payload = bytes.Clone(e.Payload)
		e.Seq = o.Seq
		m.keys[e.Key()] = &memKey{seq: e.Seq, accepted: accepted}
		m.events = append(m.events, e)
	}
	m.nextSeq += int64(len(first))
	for topic, c := range countByTopic(events, outcomes) {
		t := m.topics[topic]
		t.Add(c)
		m.topics[topic] = t
	}
	return outcomes, nil
}

// Expire implements [Expirer].
func (m *MemoryStore) Expire(ctx context.Context, q ExpireQuery) (ExpireResult, error) {
	if err := ctx.Err(); err != nil {
		return ExpireResult{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ExpireResult{}, ErrClosed
	}
	keysBefore := q.PayloadsBefore
	if !q.KeysBefore.IsZero() && q.KeysBefore.Before(keysBefore) {
		keysBefore = q.KeysBefore
	}
	var res ExpireResult
	for res.Events < q.Limit && len(m.events) > 0 {
		e := m.events[0]
		k := m.keys[e.Key()]
		if !k.accepted.Before(q.PayloadsBefore) {
			break
		}
		t := m.topics[e.Topic]
		t.Stored--
		t.Expired++
		m.topics[e.Topic] = t
		if k.accepted.Before(keysBefore) {
			delete(m.keys, e.Key())
			res.Keys++
		} else {
			k.digest = storekit.PayloadHash(e.Payload)
			m.kept = append(m.kept, e.Key())
		}
		m.events[0] = Event{}
		m.events = m.events[1:]
		m.gone++
		res.Events++
	}
	for res.Keys < q.Limit && len(m.kept) > 0 && m.keys[m.kept[0]].accepted.Before(keysBefore) {
		delete(m.keys, m.kept[0])
		m.kept = m.kept[1:]
		res.Keys++
	}
	res.More = (len(m.events) > 0 && m.keys[m.events[0].Key()].accepted.Before(q.PayloadsBefore)) ||
		(len(m.kept) > 0 && m.keys[m.kept[0]].accepted.Before(keysBefore))
	return res, nil
}

// memPage is how many events a listing copies under the lock at a time.
const memPage = 256

// Events implements [Store.Events]. It copies events in small pages (at most
// about [PageBytes] of payload), so a slow consumer neither holds the
// store's lock nor copies of many payloads.
func (m *MemoryStore) Events(ctx context.Context, q Query) iter.Seq2[Event, error] {
	return paginate(q, memPage, func(dst []Event, after int64, n int) ([]Event, error) {
		if err := ctx.Err(); err != nil {
			return dst, err
		}
		return m.page(dst, q.Topic, after, n)
	})
}

// page appends to dst up to n copies of events of topic (any if "") with a Seq above after.
func (m *MemoryStore) page(dst []Event, topic string, after int64, n int) ([]Event, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return dst, ErrClosed
	}
	// Seqs are contiguous: the events after `after` start at index after-gone.
	size := 0
	for _, e := range m.events[min(max(after-m.gone, 0), int64(len(m.events))):] {
		if len(dst) == n || size >= PageBytes {
			break
		}
		if topic == "" || e.Topic == topic {
			e.Payload = bytes.Clone(e.Payload)
			dst = append(dst, e)
			size += len(e.Payload)
		}
	}
	return dst, nil
}

// Stats implements [Store.Stats].
func (m *MemoryStore) Stats(ctx context.Context) (Stats, error) {
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return Stats{}, ErrClosed
	}
	return statsFromTopics(maps.Clone(m.topics)), nil
}

// QueryStats implements [StatsQuerier].
func (m *MemoryStore) QueryStats(ctx context.Context, q StatsQuery) (Stats, error) {
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return Stats{}, ErrClosed
	}
	st := statsFromTopics(m.topics)
	st.Topics = selectTopics(m.topics, q)
	return st, nil
}

// Close implements [Store.Close]. It discards the events.
func (m *MemoryStore) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.events, m.keys, m.kept, m.topics, m.claims = nil, nil, nil, nil, nil
	return nil
}
