package eventagg

// Key is the identity of an event: two events with equal Keys are the same event,
// and a store keeps only the first it accepts.
// Both fields are compared byte for byte; no case folding or normalisation is applied.
type Key struct {
	Topic   string
	EventID string
}

// FirstInBatch reports, for each event, whether it is the first in events with
// its [Key]. A later copy of a key within the same slice is a duplicate.
//
// Stores use it to apply the in-call rule of [Store.Append]; services that
// embed deduplication can use it to collapse a batch before their own work.
func FirstInBatch(events []Event) []bool {
	first := make([]bool, len(events))
	if len(events) == 1 {
		first[0] = true
		return first
	}
	seen := make(map[Key]struct{}, len(events))
	for i := range events {
		k := events[i].Key()
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			first[i] = true
		}
	}
	return first
}
