package driver_test

import (
	"fmt"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/driver"
)

// FirstInBatch tells which events of a batch are the first copy of their
// key: a store inserts those, and compares the others with them.
func ExampleFirstInBatch() {
	batch := []eventagg.Event{
		{Topic: "a", EventID: "1"},
		{Topic: "b", EventID: "1"},
		{Topic: "a", EventID: "1"},
	}
	fmt.Println(driver.FirstInBatch(batch))
	// Output: [true true false]
}

// Paginate turns a function that reads one page into a listing: here pages
// of two over a slice, as a store would read them from its tables.
func ExamplePaginate() {
	stored := []eventagg.Event{
		{Topic: "a", EventID: "1", Seq: 1}, {Topic: "b", EventID: "1", Seq: 2},
		{Topic: "a", EventID: "2", Seq: 3}, {Topic: "a", EventID: "3", Seq: 5},
	}
	q := eventagg.Query{Topic: "a", After: 1}
	fetches := 0
	for e, err := range driver.Paginate(q, 2, func(dst []eventagg.Event, after int64, n int) ([]eventagg.Event, error) {
		fetches++
		for _, e := range stored {
			if len(dst) < n && e.Seq > after && e.Topic == q.Topic {
				dst = append(dst, e)
			}
		}
		return dst, nil
	}) {
		if err != nil {
			panic(err)
		}
		fmt.Println(e.Topic, e.EventID, e.Seq)
	}
	fmt.Println(fetches, "pages read")
	// Output:
	// a 2 3
	// a 3 5
	// 2 pages read
}

// CountOutcomes is what a store adds to its counters, per topic, in the
// transaction that stores the events.
func ExampleCountOutcomes() {
	events := []eventagg.Event{{Topic: "a", EventID: "1"}, {Topic: "a", EventID: "1"}, {Topic: "a", EventID: "1", Payload: []byte(`2`)}}
	outcomes := []eventagg.Outcome{{Status: eventagg.Stored, Seq: 1}, {Status: eventagg.Duplicate}, {Status: eventagg.Conflict}}
	fmt.Printf("%+v\n", driver.CountOutcomes(events, outcomes)["a"])
	// Output: {Received:3 UniqueProcessed:1 DuplicateDropped:2 Conflicts:1 Stored:1 Expired:0}
}
