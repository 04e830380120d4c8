package eventagg

import "time"

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
	// Topics holds the counters of each topic that has received an event.
	// It is never nil in Stats returned by this package's stores.
	Topics map[string]Counts `json:"topics"`
	// StartedAt is when the Aggregator was created; zero in Stats from a Store.
	StartedAt time.Time `json:"started_at,omitzero"`
}

// statsFromTopics builds Stats whose totals are the sums of topics.
func statsFromTopics(topics map[string]Counts) Stats {
	s := Stats{Topics: topics}
	for _, c := range topics {
		s.Add(c)
	}
	return s
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
