package httpapi_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/eventagg/eventagg/internal/eventgen"
	"github.com/eventagg/eventagg/storetest"
)

// BenchmarkHTTPPublish measures POST /publish end to end: clients encode a
// batch, send it over loopback HTTP to the handler, which decodes,
// validates and stores it on SQLite (synchronous=FULL) and answers. Clients
// and server share the machine's CPUs, as with the load tool.
//
//	go test -run '^$' -bench HTTPPublish ./httpapi
func BenchmarkHTTPPublish(b *testing.B) {
	for _, ids := range eventgen.Kinds {
		for _, size := range storetest.BatchSizes {
			for _, clients := range []int{1, 8, 32} {
				b.Run(fmt.Sprintf("ids=%s/batch=%d/clients=%d", ids, size, clients), func(b *testing.B) {
					benchHTTP(b, ids, size, clients)
				})
			}
		}
	}
}

func benchHTTP(b *testing.B, ids string, size, clients int) {
	store, err := eventagg.OpenSQLite(filepath.Join(b.TempDir(), "events.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	agg, err := eventagg.New(store, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.NewHandler(agg, nil))
	b.Cleanup(func() { srv.Close(); agg.Close(); store.Close() })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}

	var requests atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for c := range clients {
		wg.Go(func() {
			gen := eventgen.New(uint64(c+1), ids)
			var body []byte
			for requests.Add(1) <= int64(b.N) {
				body = encode(body[:0], gen.Batch(size, storetest.DuplicateRatio))
				resp, err := client.Post(srv.URL+"/publish", "application/json", bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("POST /publish: %s", resp.Status)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)*float64(size)/b.Elapsed().Seconds(), "events/s")
}

// encode writes events as a JSON array, as a producer would send them.
func encode(dst []byte, events []eventagg.Event) []byte {
	dst = append(dst, '[')
	for i, e := range events {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = fmt.Appendf(dst, `{"topic":%q,"event_id":%q,"timestamp":%q,"source":%q,"payload":%s}`,
			e.Topic, e.EventID, e.Timestamp.Format("2006-01-02T15:04:05.999999999Z07:00"), e.Source, e.Payload)
	}
	return append(dst, ']')
}
