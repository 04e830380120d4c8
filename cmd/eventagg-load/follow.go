package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync/atomic"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
)

// followers are the consumers of a run with -followers: each follows the
// run's topic and counts what it receives, and all of them add the
// latency of each delivery (from the event's timestamp, when it was sent)
// to one histogram.
type followers struct {
	received []atomic.Int64 // per follower
	errs     chan error
	hist     histogram
}

// follow starts n followers of topic and returns once each has its stream
// open.
func follow(ctx context.Context, url, token, topic string, n int) (*followers, error) {
	f := &followers{received: make([]atomic.Int64, n), errs: make(chan error, n)}
	opened := make(chan error, n)
	for i := range n {
		// A client of its own, whose FollowState tells when the stream is open.
		var once atomic.Bool
		c, err := httpapi.NewClient(url, &httpapi.ClientOptions{
			Token: token,
			FollowState: func(err error) {
				if once.CompareAndSwap(false, true) {
					opened <- err
				}
			},
		})
		if err != nil {
			return nil, err
		}
		go func() {
			for e, err := range c.Follow(ctx, eventagg.Query{Topic: topic}) {
				if err != nil {
					f.errs <- err
					return
				}
				f.hist.add(time.Since(e.Timestamp))
				f.received[i].Add(1)
			}
		}()
	}
	for range n {
		select {
		case err := <-opened:
			if err != nil {
				return nil, fmt.Errorf("a follower could not open its stream: %w", err)
			}
		case err := <-f.errs:
			return nil, fmt.Errorf("a follower failed: %w", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return f, nil
}

// report waits up to timeout for every follower to have received stored
// events, then prints the delivery latency and fails if one fell short.
func (f *followers) report(w io.Writer, stored int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		short := 0
		for i := range f.received {
			if f.received[i].Load() < stored {
				short++
			}
		}
		select {
		case err := <-f.errs:
			return fmt.Errorf("a follower failed: %w", err)
		default:
		}
		if short == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d followers received fewer than the %d events stored, %v after the run", short, len(f.received), stored, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintf(w, "delivery   p50 %s  p90 %s  p99 %s  max %s  (%d deliveries: each of %d followers received all %d events)\n",
		ms(f.hist.quantile(0.50)), ms(f.hist.quantile(0.90)), ms(f.hist.quantile(0.99)), ms(f.hist.quantile(1)),
		f.hist.count(), len(f.received), stored)
	return nil
}

// histogram counts durations in buckets 1% wide, from 1µs to about an hour.
type histogram struct {
	buckets [2200]atomic.Int64
}

const histBase = 1.01

func (h *histogram) add(d time.Duration) {
	us := max(float64(d)/float64(time.Microsecond), 1)
	i := min(int(math.Log(us)/math.Log(histBase)), len(h.buckets)-1)
	h.buckets[i].Add(1)
}

func (h *histogram) count() int64 {
	n := int64(0)
	for i := range h.buckets {
		n += h.buckets[i].Load()
	}
	return n
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h *histogram) quantile(q float64) time.Duration {
	total := h.count()
	if total == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(total)))
	seen := int64(0)
	for i := range h.buckets {
		if seen += h.buckets[i].Load(); seen >= max(rank, 1) {
			return time.Duration(math.Pow(histBase, float64(i+1)) * float64(time.Microsecond))
		}
	}
	return time.Duration(math.Pow(histBase, float64(len(h.buckets))) * float64(time.Microsecond))
}
