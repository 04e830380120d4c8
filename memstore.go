package eventagg

import (
	"bytes"
	"context"
	"iter"
	"maps"
	"sync"
)

// MemoryStore is a [Store] that keeps everything in memory and nothing on disk.
// It suits tests and ephemeral use; its contents are lost when the process ends.
// It is safe for concurrent use. The zero value is not usable: call [NewMemoryStore].
type MemoryStore struct {
	mu     sync.RWMutex
	events []Event     // in acceptance order; events[i].Seq == i+1
	keys   map[Key]int // index in events of each key's copy
	topics map[string]Counts
	closed bool
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{keys: make(map[Key]int), topics: make(map[string]Counts)}
}

// Append implements [Store.Append]. It copies each stored payload, so the
// caller may reuse its buffers. Payloads are compared byte for byte.
func (m *MemoryStore) Append(ctx context.Context, events []Event, opts AppendOptions) ([]Outcome, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	// First the outcomes, so that a rejected batch changes nothing.
	outcomes := make([]Outcome, len(events))
	first := make(map[Key]int) // index in events of the first copy of each new key
	for i := range events {
		k := events[i].Key()
		var stored []byte
		if j, ok := m.keys[k]; ok {
			stored = m.events[j].Payload
		} else if j, ok := first[k]; ok {
			stored = events[j].Payload
		} else {
			first[k] = i
			outcomes[i] = Outcome{Status: Stored, Seq: int64(len(m.events) + len(first))}
			continue
		}
		outcomes[i].Status = Duplicate
		if !bytes.Equal(stored, events[i].Payload) {
			if opts.RejectConflicts {
				return nil, &ConflictError{Index: i, Key: k}
			}
			outcomes[i].Status = Conflict
		}
	}
	for i, o := range outcomes {
		if o.Status != Stored {
			continue
		}
		e := events[i]
		e.Timestamp = e.Timestamp.UTC()
		e.Payload = bytes.Clone(e.Payload)
		e.Seq = o.Seq
		m.keys[e.Key()] = len(m.events)
		m.events = append(m.events, e)
	}
	for topic, c := range countByTopic(events, outcomes) {
		t := m.topics[topic]
		t.Add(c)
		m.topics[topic] = t
	}
	return outcomes, nil
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
	// Seq is index+1, so the events after `after` start at index `after`.
	size := 0
	for _, e := range m.events[min(after, int64(len(m.events))):] {
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
	m.events, m.keys, m.topics = nil, nil, nil
	return nil
}
