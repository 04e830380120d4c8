package httpapi_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

// switchStore fails every Append while fail is set.
type switchStore struct {
	eventagg.Store
	fail atomic.Bool
}

var errDiskGone = errors.New("disk I/O error on /var/lib/secret")

func (s *switchStore) Append(ctx context.Context, events []eventagg.Event, opts eventagg.AppendOptions) ([]eventagg.Outcome, error) {
	if s.fail.Load() {
		return nil, errDiskGone
	}
	return s.Store.Append(ctx, events, opts)
}

func TestStoreFaultAnswers503ThenRecovers(t *testing.T) {
	store := &switchStore{Store: eventagg.NewMemoryStore()}
	s := newServer(t, store, nil, &httpapi.Options{})
	const batch = `[{"topic":"a","event_id":"1"},{"topic":"a","event_id":"2"}]`
	store.fail.Store(true)
	for range 3 {
		resp := s.do(t, "POST", "/publish", batch)
		var body httpapi.ErrorResponse
		resp.decode(t, &body)
		if resp.status != 503 || resp.header.Get("Retry-After") == "" || !strings.Contains(body.Error, "nothing was stored") {
			t.Fatalf("publish during the fault = %d %s; want 503 with Retry-After", resp.status, resp.body)
		}
		if strings.Contains(string(resp.body), "secret") {
			t.Errorf("the answer leaks the store's error: %s", resp.body)
		}
	}
	if st := s.stats(t); st.Received != 0 {
		t.Errorf("failed publishes were counted: %+v", st.Counts)
	}
	if resp := s.do(t, "GET", "/health", ""); resp.status != 200 {
		t.Errorf("GET /health during a write fault = %d, want 200 (reads still work)", resp.status)
	}
	store.fail.Store(false)
	resp := s.do(t, "POST", "/publish", batch)
	if resp.status != 200 || strings.TrimSpace(string(resp.body)) != `{"processed_count":2,"duplicate_dropped":0,"conflicts":0}` {
		t.Errorf("the resent batch after the fault cleared = %d %s; want both stored", resp.status, resp.body)
	}
	if st := s.stats(t); st.Received != 2 || st.UniqueProcessed != 2 {
		t.Errorf("after recovery Stats() = %+v, want 2 received and stored", st.Counts)
	}
}
