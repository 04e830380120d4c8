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
	"flag"
	"fmt"
	"log"
	"net/http/httptest"
	"strconv"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

func main() {
	url := flag.String("url", "", "eventagg server URL (default: one started in process)")
	flag.Parse()
	if *url == "" {
		agg, err := eventagg.New(eventagg.NewMemoryStore(), nil)
		if err != nil {
			log.Fatal(err)
		}
		defer agg.Close()
		srv := httptest.NewServer(httpapi.NewHandler(agg, nil))
		defer srv.Close()
		*url = srv.URL
	}
	client, err := httpapi.NewClient(*url, nil) // retries network errors, 429 and 5xx
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	run := strconv.FormatInt(time.Now().UnixNano(), 36) // fresh ids on every run
	var batch []eventagg.Event
	for i := range 5 {
		batch = append(batch, eventagg.Event{Topic: "examples", EventID: run + "-" + strconv.Itoa(i), Source: "publisher"})
	}
	before, err := client.Stats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for attempt := 1; attempt <= 3; attempt++ {
		res, err := client.Publish(ctx, batch...)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("send %d: processed %d, duplicates dropped %d\n", attempt, res.Processed, res.Duplicates)
	}
	after, err := client.Stats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("stored %d new events for %d sent\n", after.UniqueProcessed-before.UniqueProcessed, after.Received-before.Received)
}
