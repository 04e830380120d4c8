// Command webhook embeds eventagg in an existing service to process each
// delivery once: a webhook receiver whose sender redelivers until it gets a
// 2xx. Each delivery is claimed by its delivery id before it is processed
// and completed after (Aggregator.Once), so that:
//
//   - a delivery is processed at least once: if the receiver crashes while
//     processing, its claim lapses after -lease and the sender's next
//     redelivery is processed again; if processing fails, the claim is
//     released and the receiver answers 503, so the sender redelivers;
//   - its completion is recorded exactly once: a redelivery after the
//     completion is acknowledged (200) without being processed again, even
//     across restarts; one that arrives while another worker processes the
//     delivery gets 503 with Retry-After, the lease's end;
//   - a "redelivery" whose body differs from the first is a conflict, a bug
//     of the sender: it is acknowledged too (redelivering it would not
//     help), not processed, and logged and answered as a conflict.
//
// Processing here is a log line, and -work-time of pretend work.
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
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/eventagg/eventagg"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	db := flag.String("db", "webhooks.db", "SQLite database file")
	lease := flag.Duration("lease", 30*time.Second, "how long a delivery is held for its processing: after a crash, a redelivery is processed again once it has passed")
	work := flag.Duration("work-time", 0, "pretend processing takes this long")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	if err := run(ctx, ln, config{db: *db, lease: *lease, work: *work}, log.Default()); err != nil {
		log.Fatal(err)
	}
}

// config is what run needs beside its listener.
type config struct {
	db    string        // SQLite database file
	lease time.Duration // of a claim
	work  time.Duration // pretend processing time
}

// run serves the webhook receiver on ln, recording deliveries in the SQLite
// database cfg.db, until ctx ends.
func run(ctx context.Context, ln net.Listener, cfg config, logger *log.Logger) (err error) {
	defer ln.Close()
	if cfg.lease <= 0 {
		cfg.lease = 30 * time.Second
	}
	store, err := eventagg.OpenSQLite(cfg.db, nil)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	agg, err := eventagg.New(store, nil)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, agg.Close()) }() // before store.Close

	// process is the service's own work on a delivery.
	process := func(ctx context.Context, id string, body []byte) error {
		logger.Printf("delivery %s: processing %s", id, body)
		if cfg.work > 0 {
			select {
			case <-time.After(cfg.work):
			case <-ctx.Done(): // the lease ran out, or the sender left
				return ctx.Err()
			}
		}
		return nil
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhook", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil || !json.Valid(body) || r.Header.Get("X-Delivery-ID") == "" {
			http.Error(w, "want a JSON body and an X-Delivery-ID header", http.StatusBadRequest)
			return
		}
		id := r.Header.Get("X-Delivery-ID")
		ev := eventagg.Event{Topic: "webhooks", EventID: id, Source: r.RemoteAddr, Payload: body}
		// Claim, process, complete: the completion and the event are one
		// durable transaction, recorded only once processing succeeded.
		c, err := agg.Once(r.Context(), ev, cfg.lease, func(ctx context.Context) error {
			return process(ctx, id, body)
		})
		switch {
		case errors.Is(err, eventagg.ErrInvalidEvent): // a bad id or payload: redelivering will not help
			http.Error(w, err.Error(), http.StatusBadRequest)
		case err != nil:
			logger.Printf("delivery %s: not completed (%v); the sender will redeliver", id, err)
			http.Error(w, "try again", http.StatusServiceUnavailable)
		case c.Status == eventagg.Busy:
			logger.Printf("delivery %s: being processed by another worker until %s", id, c.Expires.Format(time.RFC3339))
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(time.Until(c.Expires).Seconds()))))
			http.Error(w, "in progress; try again later", http.StatusServiceUnavailable)
		case c.Status == eventagg.Done:
			redelivered(w, r, agg, ev, logger)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	logger.Printf("webhook receiver on http://%s/webhook", ln.Addr())
	return serve(ctx, srv, ln)
}

// redelivered answers a delivery whose id was completed before. Publishing
// it counts the copy (a duplicate) and tells whether its body is the first
// delivery's (a conflict if not).
func redelivered(w http.ResponseWriter, r *http.Request, agg *eventagg.Aggregator, ev eventagg.Event, logger *log.Logger) {
	res, err := agg.Publish(r.Context(), ev)
	if err != nil { // the completion stands: only the count of this copy is lost
		logger.Printf("delivery %s: redelivery, ignored (not counted: %v)", ev.EventID, err)
		w.WriteHeader(http.StatusOK)
		return
	}
	if res.Outcomes[0].Status == eventagg.Conflict {
		logger.Printf("delivery %s: conflict: the body differs from the first delivery's, which was processed; ignored", ev.EventID)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK) // redelivering would not help
		io.WriteString(w, "conflict: this delivery id came before with another body; the first was processed, this one is ignored\n")
		return
	}
	logger.Printf("delivery %s: redelivery, ignored", ev.EventID)
	w.WriteHeader(http.StatusOK)
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
