// Command mount serves eventagg's HTTP API under /eventagg/ inside an
// existing application's mux, behind the application's own middleware.
//
//	go run ./examples/mount &
//	curl -X POST -H 'Content-Type: application/json' -d '{"topic":"t","event_id":"1"}' localhost:8082/eventagg/publish
//	curl localhost:8082/eventagg/stats
package main

import (
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
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
	store, err := eventagg.OpenSQLite("mounted.db", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	agg, err := eventagg.New(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "the application; eventagg lives under /eventagg/")
	})
	mux.Handle("/eventagg/", http.StripPrefix("/eventagg", httpapi.NewHandler(agg, &httpapi.Options{Logger: logger})))

	srv := &http.Server{Addr: "127.0.0.1:8082", Handler: requestID(mux), ReadHeaderTimeout: 5 * time.Second}
	logger.Info("listening", "url", "http://"+srv.Addr+"/eventagg/stats")
	log.Fatal(srv.ListenAndServe())
}
