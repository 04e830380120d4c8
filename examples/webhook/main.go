// Command webhook embeds eventagg's deduplication in an existing service: a
// webhook receiver whose sender redelivers until it gets a 2xx. Each
// delivery is recorded by its delivery id; a redelivery is acknowledged
// without being processed again, even across restarts.
//
//	go run ./examples/webhook &
//	curl -X POST -H 'X-Delivery-ID: d-1' -d '{"order":42}' localhost:8081/webhook   # processed
//	curl -X POST -H 'X-Delivery-ID: d-1' -d '{"order":42}' localhost:8081/webhook   # redelivery, ignored
package main

import (
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"time"

	"github.com/eventagg/eventagg"
)

func main() {
	store, err := eventagg.OpenSQLite("webhooks.db", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	agg, err := eventagg.New(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()

	http.HandleFunc("POST /webhook", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil || !json.Valid(body) || r.Header.Get("X-Delivery-ID") == "" {
			http.Error(w, "want a JSON body and an X-Delivery-ID header", http.StatusBadRequest)
			return
		}
		// Record the delivery first: once Publish returns, it is durable, so a
		// crash after this point cannot make us process it twice.
		res, err := agg.Publish(r.Context(), eventagg.Event{
			Topic: "webhooks", EventID: r.Header.Get("X-Delivery-ID"), Source: r.RemoteAddr, Payload: body,
		})
		if errors.Is(err, eventagg.ErrInvalidEvent) { // a bad id or payload: redelivering will not help
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err != nil {
			http.Error(w, "try again", http.StatusServiceUnavailable) // the sender will redeliver
			return
		}
		if !res.New[0] {
			log.Printf("delivery %s: redelivery, ignored", r.Header.Get("X-Delivery-ID"))
			w.WriteHeader(http.StatusOK)
			return
		}
		log.Printf("delivery %s: processing %s", r.Header.Get("X-Delivery-ID"), body)
		w.WriteHeader(http.StatusAccepted)
	})
	srv := &http.Server{Addr: "127.0.0.1:8081", ReadHeaderTimeout: 5 * time.Second}
	log.Printf("webhook receiver on http://%s/webhook", srv.Addr)
	log.Fatal(srv.ListenAndServe())
}
