package promcollector_test

import (
	"bufio"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/eventagg/eventagg/httpapi/promcollector"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// A host service mounts the eventagg API under /eventagg/ and serves
// eventagg's metrics from its own registry, beside its own and the Go
// runtime's, on its own /metrics.
func Example() {
	store := eventagg.NewMemoryStore() // or eventagg.OpenSQLite(path, nil)
	defer store.Close()
	agg, err := eventagg.New(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer agg.Close()
	events := httpapi.NewHandler(agg, nil)

	orders := prometheus.NewCounter(prometheus.CounterOpts{Name: "shop_orders_total", Help: "Orders taken."})
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		orders,
		promcollector.New(events, &promcollector.Options{ConstLabels: prometheus.Labels{"service": "shop"}}),
		collectors.NewGoCollector(),
	)

	mux := http.NewServeMux()
	mux.Handle("/eventagg/", http.StripPrefix("/eventagg", events))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	orders.Inc()
	resp, err := http.Post(srv.URL+"/eventagg/publish", "application/json",
		strings.NewReader(`[{"topic":"orders","event_id":"o-1"},{"topic":"orders","event_id":"o-1"}]`))
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()

	resp, err = http.Get(srv.URL + "/metrics")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		for _, name := range []string{"shop_orders_total ", "eventagg_events_received_total{", "eventagg_events_unique_total{", "eventagg_events_duplicate_total{"} {
			if strings.HasPrefix(line, name) {
				fmt.Println(line)
			}
		}
		if strings.HasPrefix(line, "go_goroutines ") {
			fmt.Println("go_goroutines ...")
		}
	}
	// Output:
	// eventagg_events_duplicate_total{service="shop"} 1
	// eventagg_events_received_total{service="shop"} 2
	// eventagg_events_unique_total{service="shop"} 1
	// go_goroutines ...
	// shop_orders_total 1
}
