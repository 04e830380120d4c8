// Command webhook embeds eventagg's deduplication in an existing service: a
// webhook receiver whose sender redelivers until it gets a 2xx. Each
// delivery is recorded by its delivery id; a redelivery is acknowledged
// without being processed again, even across restarts. A "redelivery" whose
// body differs from the first is a conflict, a bug of the sender: it is
// acknowledged too (redelivering it would not help), not processed, and
// logged and answered as a conflict.
//
//	go run ./examples/webhook &
//	curl -X POST -H 'X-Delivery-ID: d-1' -d '{"order":42}' localhost:8081/webhook   # processed
//	curl -X POST -H 'X-Delivery-ID: d-1' -d '{"order":42}' localhost:8081/webhook   # redelivery, ignored
//	curl -X POST -H 'X-Delivery-ID: d-1' -d '{"order":43}' localhost:8081/webhook   # conflict, ignored
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/eventagg/eventagg"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	db := flag.String("db", "webhooks.db", "SQLite database file")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	if err := run(ctx, ln, *db, log.Default()); err != nil {
		log.Fatal(err)
	}
}

// run serves the webhook receiver on ln, recording deliveries in the SQLite
// database at dbPath, until ctx ends.
func run(ctx context.Context, ln net.Listener, dbPath string, logger *log.Logger) (err error) {
	defer ln.Close()
	store, err := eventagg.OpenSQLite(dbPath, nil)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	agg, err := eventagg.New(store, nil)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, agg.Close()) }() // before store.Close

	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhook", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil || !json.Valid(body) || r.Header.Get("X-Delivery-ID") == "" {
			http.Error(w, "want a JSON body and an X-Delivery-ID header", http.StatusBadRequest)
			return
		}
		id := r.Header.Get("X-Delivery-ID")
		// Record the delivery first: once Publish returns, it is durable, so a
		// crash after this point cannot make us process it twice.
		res, err := agg.Publish(r.Context(), eventagg.Event{
			Topic: "webhooks", EventID: id, Source: r.RemoteAddr, Payload: body,
		})
		if errors.Is(err, eventagg.ErrInvalidEvent) { // a bad id or payload: redelivering will not help
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err != nil {
			http.Error(w, "try again", http.StatusServiceUnavailable) // the sender will redeliver
			return
		}
		switch res.Outcomes[0].Status {
		case eventagg.Duplicate:
			logger.Printf("delivery %s: redelivery, ignored", id)
			w.WriteHeader(http.StatusOK)
		case eventagg.Conflict:
			logger.Printf("delivery %s: conflict: the body differs from the first delivery's, which was processed; ignored", id)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusOK) // redelivering would not help
			io.WriteString(w, "conflict: this delivery id came before with another body; the first was processed, this one is ignored\n")
		default:
			logger.Printf("delivery %s: processing %s", id, body)
			w.WriteHeader(http.StatusAccepted)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	logger.Printf("webhook receiver on http://%s/webhook", ln.Addr())
	return serve(ctx, srv, ln)
}

// serve runs srv on ln until ctx ends, then lets the requests under way finish.
func serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if err != nil {
		srv.Close()
	}
	<-errc // http.ErrServerClosed
	return err
}
