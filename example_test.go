package eventagg_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/eventagg/eventagg"
)

// Publishing the same batch twice stores it once: the second call drops every
// event as a duplicate.
func Example() {
	dir, err := os.MkdirTemp("", "eventagg-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := eventagg.OpenSQLite(filepath.Join(dir, "events.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	agg, err := eventagg.New(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()

	ctx := context.Background()
	batch := []eventagg.Event{
		{Topic: "orders", EventID: "o-1", Payload: json.RawMessage(`{"total":42}`)},
		{Topic: "orders", EventID: "o-2"},
		{Topic: "orders", EventID: "o-1", Payload: json.RawMessage(`{"total":42}`)}, // a copy within the batch
	}
	for range 2 {
		res, err := agg.Publish(ctx, batch...)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("processed %d, duplicates %d:", res.Processed, res.Duplicates)
		for _, o := range res.Outcomes {
			fmt.Print(" ", o.Status)
		}
		fmt.Println()
	}
	// Output:
	// processed 2, duplicates 1: stored stored duplicate
	// processed 0, duplicates 3: duplicate duplicate duplicate
}

// A copy of a stored key with another payload is a conflict: a producer
// reused an id, or changed an event it resends. The first copy stays, and
// the copy is counted among the duplicates and as a conflict; with
// RejectConflicts the whole call is refused instead.
func ExampleAggregator_Publish_conflict() {
	agg, err := eventagg.New(eventagg.NewMemoryStore(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()
	ctx := context.Background()
	agg.Publish(ctx, eventagg.Event{Topic: "orders", EventID: "o-1", Payload: json.RawMessage(`{"total":42}`)})
	res, err := agg.Publish(ctx, eventagg.Event{Topic: "orders", EventID: "o-1", Payload: json.RawMessage(`{"total":43}`)})
	fmt.Println(res.Outcomes[0].Status, res.Duplicates, res.Conflicts, err)

	strict, err := eventagg.New(eventagg.NewMemoryStore(), &eventagg.Options{RejectConflicts: true})
	if err != nil {
		log.Fatal(err)
	}
	defer strict.Close()
	strict.Publish(ctx, eventagg.Event{Topic: "orders", EventID: "o-1", Payload: json.RawMessage(`{"total":42}`)})
	_, err = strict.Publish(ctx,
		eventagg.Event{Topic: "orders", EventID: "o-2"},
		eventagg.Event{Topic: "orders", EventID: "o-1", Payload: json.RawMessage(`{"total":43}`)})
	var ce *eventagg.ConflictError
	fmt.Println(errors.As(err, &ce), ce.Index)
	st, _ := strict.Stats(ctx)
	fmt.Println(st.Received, st.UniqueProcessed)
	// Output:
	// conflict 1 1 <nil>
	// true 1
	// 1 1
}

// Events lists what was stored, in acceptance order; Query narrows it to one
// topic and pages through it with a cursor.
func ExampleAggregator_Events() {
	agg, err := eventagg.New(eventagg.NewMemoryStore(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()
	ctx := context.Background()
	ts := time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)
	_, err = agg.Publish(ctx,
		eventagg.Event{Topic: "orders", EventID: "o-1", Timestamp: ts, Payload: json.RawMessage(`{"total":42}`)},
		eventagg.Event{Topic: "payments", EventID: "p-1", Timestamp: ts},
		eventagg.Event{Topic: "orders", EventID: "o-2", Timestamp: ts.Add(time.Minute)},
		eventagg.Event{Topic: "orders", EventID: "o-3", Timestamp: ts.Add(2 * time.Minute)},
	)
	if err != nil {
		log.Fatal(err)
	}

	q := eventagg.Query{Topic: "orders", Limit: 2}
	for page := 1; ; page++ {
		n := 0
		for e, err := range agg.Events(ctx, q) {
			if err != nil {
				log.Fatal(err)
			}
			fmt.Printf("page %d: seq %d %s/%s at %s\n", page, e.Seq, e.Topic, e.EventID,
				e.Timestamp.Format(time.TimeOnly))
			q.After = e.Seq
			n++
		}
		if n < q.Limit {
			break
		}
	}
	// Output:
	// page 1: seq 1 orders/o-1 at 09:30:00
	// page 1: seq 3 orders/o-2 at 09:31:00
	// page 2: seq 4 orders/o-3 at 09:32:00
}

// Stats reports the counters overall and per topic. Received always equals
// UniqueProcessed plus DuplicateDropped.
func ExampleAggregator_Stats() {
	agg, err := eventagg.New(eventagg.NewMemoryStore(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()
	ctx := context.Background()
	for _, id := range []string{"a", "b", "a", "c", "b"} {
		if _, err := agg.Publish(ctx, eventagg.Event{Topic: "clicks", EventID: id}); err != nil {
			log.Fatal(err)
		}
	}
	if _, err := agg.Publish(ctx, eventagg.Event{Topic: "views", EventID: "a"}); err != nil {
		log.Fatal(err)
	}
	st, err := agg.Stats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("received %d = unique %d + duplicates %d\n", st.Received, st.UniqueProcessed, st.DuplicateDropped)
	fmt.Printf("clicks: %+v\n", st.Topics["clicks"])
	fmt.Printf("views: %+v\n", st.Topics["views"])
	// Output:
	// received 6 = unique 4 + duplicates 2
	// clicks: {Received:5 UniqueProcessed:3 DuplicateDropped:2 Conflicts:0 Stored:3 Expired:0}
	// views: {Received:1 UniqueProcessed:1 DuplicateDropped:0 Conflicts:0 Stored:1 Expired:0}
}

// A rejected batch names the first invalid event and its field, and nothing
// of it is stored.
func ExampleValidationError() {
	agg, err := eventagg.New(eventagg.NewMemoryStore(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()
	_, err = agg.Publish(context.Background(),
		eventagg.Event{Topic: "orders", EventID: "o-1"},
		eventagg.Event{Topic: "orders", EventID: ""},
	)
	var verr *eventagg.ValidationError
	if errors.As(err, &verr) {
		fmt.Println(verr.Index, verr.Field, verr.Reason)
	}
	fmt.Println(err)
	// Output:
	// 1 event_id is required
	// eventagg: event 1: event_id: is required
}
