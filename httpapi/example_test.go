package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

// NewHandler serves the API for an Aggregator; here on a test server, with
// the same body posted twice, then one of its ids with another payload.
func ExampleNewHandler() {
	agg, err := eventagg.New(eventagg.NewMemoryStore(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()
	srv := httptest.NewServer(httpapi.NewHandler(agg, nil))
	defer srv.Close()

	body := `[{"topic":"orders","event_id":"o-1"},{"topic":"orders","event_id":"o-2"}]`
	for range 2 {
		resp, err := http.Post(srv.URL+"/publish", "application/json", strings.NewReader(body))
		if err != nil {
			log.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Print(resp.Status, " ", string(answer))
	}
	changed := `[{"topic":"orders","event_id":"o-3"},{"topic":"orders","event_id":"o-1","payload":{"total":7}}]`
	resp, err := http.Post(srv.URL+"/publish?duplicates=true", "application/json", strings.NewReader(changed))
	if err != nil {
		log.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(resp.Status, " ", string(answer))

	if resp, err = http.Get(srv.URL + "/health"); err != nil {
		log.Fatal(err)
	}
	answer, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(resp.Status, " ", string(answer))
	// Output:
	// 200 OK {"processed_count":2,"duplicate_dropped":0,"conflicts":0}
	// 200 OK {"processed_count":0,"duplicate_dropped":2,"conflicts":0}
	// 200 OK {"processed_count":1,"duplicate_dropped":1,"conflicts":1,"duplicate_indexes":[1],"conflict_indexes":[1]}
	// 200 OK {"status":"healthy"}
}

// A Client publishes with retries; resending what the server already holds
// only moves the duplicate counter.
func ExampleClient_Publish() {
	agg, err := eventagg.New(eventagg.NewMemoryStore(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()
	srv := httptest.NewServer(httpapi.NewHandler(agg, nil))
	defer srv.Close()

	client, err := httpapi.NewClient(srv.URL, nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	events := []eventagg.Event{
		{Topic: "clicks", EventID: "c-1", Source: "web"},
		{Topic: "clicks", EventID: "c-2", Source: "web"},
	}
	for range 3 { // an at-least-once producer resending its batch
		res, err := client.Publish(ctx, events...)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("processed %d, duplicates %d: %v\n", res.Processed, res.Duplicates, res.Outcomes)
	}
	st, err := client.Stats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("received %d, unique %d, duplicates %d\n", st.Received, st.UniqueProcessed, st.DuplicateDropped)
	// Output:
	// processed 2, duplicates 0: [{stored 0} {stored 0}]
	// processed 0, duplicates 2: [{duplicate 0} {duplicate 0}]
	// processed 0, duplicates 2: [{duplicate 0} {duplicate 0}]
	// received 6, unique 2, duplicates 4
}

// The Client's errors match the library's, as the Aggregator's would: here
// a server that rejects conflicts refuses an id resent with another payload.
func ExampleAPIError() {
	agg, err := eventagg.New(eventagg.NewMemoryStore(), &eventagg.Options{RejectConflicts: true})
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()
	srv := httptest.NewServer(httpapi.NewHandler(agg, nil))
	defer srv.Close()
	client, err := httpapi.NewClient(srv.URL, nil)
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	first := eventagg.Event{Topic: "orders", EventID: "o-1", Payload: json.RawMessage(`{"total":42}`)}
	if _, err := client.Publish(ctx, first); err != nil {
		log.Fatal(err)
	}
	changed := first
	changed.Payload = json.RawMessage(`{"total":7}`)
	_, err = client.Publish(ctx, eventagg.Event{Topic: "orders", EventID: "o-2"}, changed)

	var conflict *eventagg.ConflictError
	if errors.As(err, &conflict) {
		fmt.Printf("event %d conflicts with the stored %s/%s\n", conflict.Index, conflict.Key.Topic, conflict.Key.EventID)
	}
	var apiErr *httpapi.APIError
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.StatusCode, apiErr.Code, errors.Is(err, eventagg.ErrConflict))
	}
	// Output:
	// event 1 conflicts with the stored orders/o-1
	// 409 conflict true
}

// The handler mounts under a prefix in an existing mux.
func ExampleHandler_mount() {
	agg, err := eventagg.New(eventagg.NewMemoryStore(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "the app") })
	mux.Handle("/eventagg/", http.StripPrefix("/eventagg", httpapi.NewHandler(agg, nil)))

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/eventagg/nope", nil))
	fmt.Print(rec.Code, " ", rec.Body.String())
	// Output:
	// 404 {"error":"no such endpoint: /eventagg/nope (try POST /eventagg/publish, GET /eventagg/events, /eventagg/stats, /eventagg/health, /eventagg/metrics or /eventagg/openapi.json)","code":"not_found"}
}
