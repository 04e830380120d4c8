package eventagg

import (
	"context"

	"slices"
	"time"
)

// Counts are the three counters kept for the whole store and for each topic.
//
// At every moment, across restarts and crashes:
//
//	Received == UniqueProcessed + DuplicateDropped
//	UniqueProcessed == number of events stored
type Counts struct {
	Received         int64 `json:"received"`          // events offered in accepted batches
	UniqueProcessed  int64 `json:"unique_processed"`  // events stored
	DuplicateDropped int64 `json:"duplicate_dropped"` // events dropped because their key was already stored
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.Received += o.Received
	c.UniqueProcessed += o.UniqueProcessed
	c.DuplicateDropped += o.DuplicateDropped
}

// Stats is a snapshot of the counters.
// Stores persist the counters in the same transaction as the events they count.
type Stats struct {
	Counts
	// Topics holds the counters of each topic that has received an event,
	// or of those a [StatsQuery] selected. It is never nil in Stats returned
	// by this package's stores.
	Topics map[string]Counts `json:"topics"`
	// TopicCount is the number of topics that have received an event,
	// whether or not Topics holds them all.
	TopicCount int64 `json:"topic_count"`
	// StartedAt is when the Aggregator was created; zero in Stats from a Store.
	StartedAt time.Time `json:"started_at,omitzero"`
}

// statsFromTopics builds Stats whose totals are the sums of topics.
func statsFromTopics(topics map[string]Counts) Stats {
	s := Stats{Topics: topics, TopicCount: int64(len(topics))}
	for _, c := range topics {
		s.Add(c)
	}
	return s
}

// StatsQuery selects the topics that [QueryStats] returns beside the totals,
// in byte order of their names, a page at a time.
type StatsQuery struct {
	// TopicsAfter, if not empty, skips the topics whose names sort at or
	// before it: pass the last name of a page to get the next page.
	TopicsAfter string
	// TopicsLimit is the most topics returned. Zero returns none: the
	// totals and TopicCount only.
	TopicsLimit int
}

// StatsQuerier is implemented by stores that answer a [StatsQuery] without
// holding every topic in memory. [QueryStats] uses it when present.
type StatsQuerier interface {
	// QueryStats returns the totals over every topic, TopicCount, and the
	// counters of the topics q selects, all from one snapshot.
	// Returns ErrClosed after Close.
	QueryStats(ctx context.Context, q StatsQuery) (Stats, error)
}

// QueryStats returns the totals of s, the number of its topics, and the
// counters of the topics q selects. It uses [StatsQuerier] when s implements
// it; otherwise it reads every topic with Store.Stats and keeps the page.
func QueryStats(ctx context.Context, s Store, q StatsQuery) (Stats, error) {
	if sq, ok := s.(StatsQuerier); ok {
		return sq.QueryStats(ctx, q)
	}
	st, err := s.Stats(ctx)
	if err != nil {
		return Stats{}, err
	}
	st.Topics = SelectTopics(st.Topics, q)
	return st, nil
}

// SelectTopics returns the counters of the topics q selects from all, the
// counters of every topic. Stores that keep their topics in memory use it
// to implement [StatsQuerier].
func SelectTopics(all map[string]Counts, q StatsQuery) map[string]Counts {
	page := make(map[string]Counts, min(max(q.TopicsLimit, 0), len(all)))
	if q.TopicsLimit <= 0 {
		return page
	}
	names := make([]string, 0, len(all))
	for name := range all {
		if name > q.TopicsAfter {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names[:min(len(names), q.TopicsLimit)] {
		page[name] = all[name]
	}
	return page
}

// CountByTopic returns, per topic, the counters that appending events with the
// outcome isNew (as returned by [Store.Append]) moves. Stores use it to update
// their counters in the same transaction as the events.
func CountByTopic(events []Event, isNew []bool) map[string]Counts {
	topics := make(map[string]Counts, 1)
	for i := range events {
		c := topics[events[i].Topic]
		c.Received++
		if isNew[i] {
			c.UniqueProcessed++
		} else {
			c.DuplicateDropped++
		}
		topics[events[i].Topic] = c
	}
	return topics
}
