// Command publisher is an at-least-once producer: it sends a batch through
// httpapi.Client, then resends it as if the first answer had been lost, and
// shows that nothing was stored twice.
//
// With -url it talks to a running server (go run ./cmd/eventagg); without,
// it starts one in process over a memory store.
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
	"net/http/httptest"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

func main() {
	url := flag.String("url", "", "eventagg server URL (default: one started in process)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run publishes a batch three times to the server at url (or, if url is
// empty, to one it starts in process) and writes what happened to out.
func run(ctx context.Context, url string, out io.Writer) (err error) {
	if url == "" {
		store := eventagg.NewMemoryStore()
		defer func() { err = errors.Join(err, store.Close()) }()
		var agg *eventagg.Aggregator
		if agg, err = eventagg.New(store, nil); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, agg.Close()) }() // before store.Close
		srv := httptest.NewServer(httpapi.NewHandler(agg, nil))
		defer srv.Close() // before agg.Close
		url = srv.URL
	}
	client, err := httpapi.NewClient(url, nil) // retries network errors, 429 and 5xx
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	runID := strconv.FormatInt(time.Now().UnixNano(), 36) // fresh ids on every run
	var batch []eventagg.Event
	for i := range 5 {
		batch = append(batch, eventagg.Event{Topic: "examples", EventID: runID + "-" + strconv.Itoa(i), Source: "publisher"})
	}
	before, err := client.Stats(ctx)
	if err != nil {
		return err
	}
	for attempt := 1; attempt <= 3; attempt++ {
		res, err := client.Publish(ctx, batch...)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "send %d: processed %d, duplicates dropped %d\n", attempt, res.Processed, res.Duplicates)
	}
	after, err := client.Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "stored %d new events for %d sent\n", after.UniqueProcessed-before.UniqueProcessed, after.Received-before.Received)
	return nil
}
