// Command mount serves eventagg's HTTP API under /eventagg/ inside an
// existing application's mux, behind the application's own middleware.
//
//	go run ./examples/mount &
//	curl -X POST -H 'Content-Type: application/json' -d '{"topic":"t","event_id":"1"}' localhost:8082/eventagg/publish
//	curl localhost:8082/eventagg/stats
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

// requestID is the application's own middleware; it wraps eventagg's routes too.
func requestID(next http.Handler) http.Handler {
	var n atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-ID", fmt.Sprint(n.Add(1)))
		next.ServeHTTP(w, r)
	})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8082", "listen address")
	db := flag.String("db", "mounted.db", "SQLite database file")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	if err := run(ctx, ln, *db, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
		log.Fatal(err)
	}
}

// run serves the application, with eventagg under /eventagg/ over the
// SQLite database at dbPath, on ln until ctx ends.
func run(ctx context.Context, ln net.Listener, dbPath string, logger *slog.Logger) (err error) {
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
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "the application; eventagg lives under /eventagg/")
	})
	mux.Handle("/eventagg/", http.StripPrefix("/eventagg", httpapi.NewHandler(agg, &httpapi.Options{Logger: logger})))

	srv := &http.Server{Handler: requestID(mux), ReadHeaderTimeout: 5 * time.Second}
	logger.Info("listening", "url", "http://"+ln.Addr().String()+"/eventagg/stats")
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
