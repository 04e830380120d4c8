// Command publisher is an at-least-once producer: it sends a batch, resends
// it as if the first answer had been lost, then resends it with one event
// changed, and shows that nothing was stored twice.
//
// It publishes through an eventagg.Publisher, with the same code whether
// that is an Aggregator in process (the default, over a memory store) or,
// with -url, an httpapi.Client talking to a running server (go run
// ./cmd/eventagg).
//
//	go run ./examples/publisher
//	go run ./examples/publisher -url http://127.0.0.1:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

func main() {
	url := flag.String("url", "", "eventagg server URL (default: publish to an Aggregator in process)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// counter returns the counters of what a Publisher publishes to.
type counter func(context.Context) (eventagg.Counts, error)

// run publishes to the server at url, or if url is empty to an Aggregator
// it starts in process, and writes what happened to out.
func run(ctx context.Context, url string, out io.Writer) (err error) {
	var (
		pub    eventagg.Publisher
		counts counter
	)
	if url == "" {
		store := eventagg.NewMemoryStore()
		defer func() { err = errors.Join(err, store.Close()) }()
		var agg *eventagg.Aggregator
		if agg, err = eventagg.New(store, nil); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, agg.Close()) }() // before store.Close
		pub = agg
		counts = func(ctx context.Context) (eventagg.Counts, error) {
			st, err := agg.Stats(ctx)
			return st.Counts, err
		}
	} else {
		client, err := httpapi.NewClient(url, nil) // retries network errors, 429 and 5xx
		if err != nil {
			return err
		}
		pub = client
		counts = func(ctx context.Context) (eventagg.Counts, error) {
			st, err := client.Stats(ctx)
			return st.Counts, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return publish(ctx, pub, counts, out)
}

// publish is the producer. It knows only a Publisher: the Result and the
// errors are the same from an Aggregator as from a Client.
func publish(ctx context.Context, pub eventagg.Publisher, counts counter, out io.Writer) error {
	runID := strconv.FormatInt(time.Now().UnixNano(), 36) // fresh ids on every run
	var batch []eventagg.Event
	for i := range 5 {
		batch = append(batch, eventagg.Event{Topic: "examples", EventID: runID + "-" + strconv.Itoa(i), Source: "publisher",
			Payload: []byte(`{"n":` + strconv.Itoa(i) + `}`)})
	}
	changed := slices.Clone(batch)
	changed[2].Payload = []byte(`{"n":2,"changed":true}`) // a bug: the same id for another event

	before, err := counts(ctx)
	if err != nil {
		return err
	}
	for attempt, events := range [][]eventagg.Event{batch, batch, batch, changed} {
		label := fmt.Sprintf("send %d", attempt+1)
		if attempt == 3 {
			label += ", event 2 changed"
		}
		res, err := pub.Publish(ctx, events...)
		var conflict *eventagg.ConflictError
		if errors.As(err, &conflict) { // the publisher rejects conflicts: nothing was stored
			fmt.Fprintf(out, "%s: refused: event %d conflicts with the stored copy of its id\n", label, conflict.Index)
			continue
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: processed %d, duplicates dropped %d, conflicts %d\n", label, res.Processed, res.Duplicates, res.Conflicts)
		for i, o := range res.Outcomes {
			if o.Status == eventagg.Conflict {
				fmt.Fprintf(out, "  event %d: conflict: dropped, the first copy is kept\n", i)
			}
		}
	}
	after, err := counts(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "stored %d new events for %d sent (conflicts: %d)\n", after.UniqueProcessed-before.UniqueProcessed,
		after.Received-before.Received, after.Conflicts-before.Conflicts)
	return nil
}
