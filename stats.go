package eventagg

import (
	"context"
	"time"

	"github.com/eventagg/eventagg/internal/storekit"
)

// Counts are the counters kept for the whole store and for each topic.
//
// At every moment, across restarts and crashes:
//
//	Received == UniqueProcessed + DuplicateDropped
//	UniqueProcessed == Stored + Expired
//	Stored == number of events a full listing returns
//	Conflicts <= DuplicateDropped
//
// All but Stored only grow.
type Counts struct {
	Received         int64 `json:"received"`          // events offered in accepted batches
	UniqueProcessed  int64 `json:"unique_processed"`  // events stored, expired ones included
	DuplicateDropped int64 `json:"duplicate_dropped"` // events dropped because their key was already stored, conflicts included
	Conflicts        int64 `json:"conflicts"`         // of those, the ones whose payload differed from the stored copy's
	Stored           int64 `json:"stored"`            // events in the store now
	Expired          int64 `json:"expired"`           // events removed by retention
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.Received += o.Received
	c.UniqueProcessed += o.UniqueProcessed
	c.DuplicateDropped += o.DuplicateDropped
	c.Conflicts += o.Conflicts
	c.Stored += o.Stored
	c.Expired += o.Expired
}

// Count counts one event whose outcome had status s.
func (c *Counts) Count(s Status) {
	c.Received++
	switch s {
	case Stored:
		c.UniqueProcessed++
		c.Stored++
	case Conflict:
		c.Conflicts++
		c.DuplicateDropped++
	default:
		c.DuplicateDropped++
	}
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
	// Claims counts the claims of process-once work (see [Claimer]), in
	// Stats from an Aggregator whose store is a Claimer; nil otherwise.
	Claims *ClaimCounts `json:"claims,omitempty"`
}

// statsFromTopics builds Stats whose totals are the sums of topics.
func statsFromTopics(topics map[string]Counts) Stats {
	s := Stats{Topics: topics, TopicCount: int64(len(topics))}
	for _, c := range topics {
		s.Add(c)
	}
	return s
}

// countByTopic returns, per topic, the counters that appending events with
// outcomes moves: what stores add in the same transaction as the events.
func countByTopic(events []Event, outcomes []Outcome) map[string]Counts {
	topics := make(map[string]Counts, 1)
	for i := range events {
		c := topics[events[i].Topic]
		c.Count(outcomes[i].Status)
		topics[events[i].Topic] = c
	}
	return topics
}

// StatsQuery selects the topics that [Aggregator.QueryStats] returns beside
// the totals, in byte order of their names, a page at a time.
type StatsQuery struct {
	// TopicsAfter, if not empty, skips the topics whose names sort at or
	// before it: pass the last name of a page to get the next page.
	TopicsAfter string
	// TopicsLimit is the most topics returned. Zero returns none: the
	// totals and TopicCount only.
	TopicsLimit int
}

// StatsQuerier is implemented by stores that answer a [StatsQuery] without
// holding every topic in memory. [Aggregator.QueryStats] uses it when
// present, and falls back to Store.Stats.
type StatsQuerier interface {
	// QueryStats returns the totals over every topic, TopicCount, and the
	// counters of the topics q selects, all from one snapshot.
	// Returns ErrClosed after Close.
	QueryStats(ctx context.Context, q StatsQuery) (Stats, error)
}

// queryStats answers q with s's StatsQuerier, or with Stats and selectTopics.
func queryStats(ctx context.Context, s Store, q StatsQuery) (Stats, error) {
	if sq, ok := s.(StatsQuerier); ok {
		return sq.QueryStats(ctx, q)
	}
	st, err := s.Stats(ctx)
	if err != nil {
		return Stats{}, err
	}
	st.Topics = selectTopics(st.Topics, q)
	return st, nil
}

// selectTopics is [driver.SelectTopics].
func selectTopics(all map[string]Counts, q StatsQuery) map[string]Counts {
	return storekit.SelectNames(all, q.TopicsAfter, q.TopicsLimit)
}
