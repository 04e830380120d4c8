package eventagg

// Key is the identity of an event: two events with equal Keys are the same event,
// and a store keeps only the first it accepts.
// Both fields are compared byte for byte; no case folding or normalisation is applied.
//
// A later copy of a key is a [Duplicate] when its payload is the same as the
// stored copy's, byte for byte, and a [Conflict] when it is not.
type Key struct {
	Topic   string
	EventID string
}
