package postgres_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/postgres"
)

// Each replica of a service opens the same database and schema, and gives its
// Store to an Aggregator. A key published to any replica is stored once.
func Example() {
	ctx := context.Background()
	store, err := postgres.Open(ctx, os.Getenv("DATABASE_URL"), &postgres.Options{Schema: "orders_events"})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	agg, err := eventagg.New(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close() // runs first: drains the queue into the store

	res, err := agg.Publish(ctx,
		eventagg.Event{Topic: "orders", EventID: "o-1"},
		eventagg.Event{Topic: "orders", EventID: "o-1"}, // dropped: same key
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("processed %d, duplicates %d\n", res.Processed, res.Duplicates)
}

// A consumer follows the events of a topic page by page, keeping the Seq of
// the last event it handled. Events never lists an event before one with a
// lower Seq is visible, so the cursor skips nothing that another replica
// stores later.
func ExampleStore_Events() {
	ctx := context.Background()
	store, err := postgres.Open(ctx, os.Getenv("DATABASE_URL"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	var cursor int64 // persisted by a real consumer
	for {
		n := 0
		for e, err := range store.Events(ctx, eventagg.Query{Topic: "orders", After: cursor, Limit: 100}) {
			if err != nil {
				log.Fatal(err)
			}
			fmt.Println(e.Seq, e.EventID)
			cursor = e.Seq
			n++
		}
		if n < 100 {
			break // caught up; a real consumer would wait and poll again
		}
	}
}
