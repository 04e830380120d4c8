// Command eventagg-load publishes generated events to a running eventagg
// server and reports throughput and latency.
//
//	eventagg-load [-url http://127.0.0.1:8080] [-clients 8] [-batch 1000] [-dups 0.2] [-events 200000] [-ids uuid]
//
// Each of -clients concurrent clients sends batches of -batch events until
// -events have been sent in all; about -dups of each batch resends ids the
// same client sent before. A progress line is printed every second. At the
// end it prints events/s, requests/s and request latency (p50, p90, p99,
// max), then checks the server's /stats: the run must have added exactly one
// stored event per distinct id sent, and received = unique + duplicates.
// With -pid, it also reports the server process's peak resident memory;
// with -db, the size of the server's SQLite files in each progress line.
// With -duration, the clients send for that long instead of -events. With
// -rate, they send at most that many events per second in all, each client
// its batches on a fixed schedule (a late batch does not make the next one
// early), so that two servers can be compared at one offered load; the
// summary then tells how much of the schedule was kept.
// Against a server with -retention, events that expire during the run may be
// stored again when resent: the check then asks for at least one stored
// event per distinct id, and unique = stored + expired.
//
// With -followers N, N consumers follow the run's events (GET
// /events?follow=true, through the Go client) while it publishes; the
// events then carry the time they were sent as their timestamp, and the
// run reports the publish-to-delivery latency (p50, p90, p99, max) over
// every delivery, and checks that each follower received every event the
// run stored. The run's events go to a topic of their own ("load-<seed>")
// so that the followers start at its beginning.
//
// It only talks to the URL it is given. Ids are fresh on every run, so runs
// against the same server do not overlap.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eventagg/eventagg/httpapi"
	"github.com/eventagg/eventagg/internal/eventgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "eventagg-load:", err)
		}
		os.Exit(1)
	}
}

type config struct {
	url       string
	clients   int
	batch     int
	dups      float64
	events    int
	duration  time.Duration
	db        string
	ids       string
	token     string
	pid       int
	progress  time.Duration
	seed      uint64
	followers int
	rate      float64
}

func parseConfig(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("eventagg-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8080", "eventagg server `URL`")
	fs.IntVar(&c.clients, "clients", 8, "concurrent clients")
	fs.IntVar(&c.batch, "batch", 1000, "events per request")
	fs.Float64Var(&c.dups, "dups", 0.2, "share of each batch that resends earlier ids (0 to 1)")
	fs.IntVar(&c.events, "events", 200000, "events to send in all")
	fs.DurationVar(&c.duration, "duration", 0, "send for this long instead of -events (0: -events)")
	fs.StringVar(&c.db, "db", "", "the server's SQLite database `path`, to report its size (file and write-ahead log) in the progress lines")
	fs.StringVar(&c.ids, "ids", "uuid", "event ids: uuid (random) or seq (sequential)")
	fs.StringVar(&c.token, "token", os.Getenv("EVENTAGG_TOKEN"), "bearer token (default $EVENTAGG_TOKEN)")
	fs.IntVar(&c.pid, "pid", 0, "server process id, to report its peak resident memory (Linux)")
	fs.DurationVar(&c.progress, "progress", time.Second, "interval of progress lines (0: none)")
	fs.Float64Var(&c.rate, "rate", 0, "events per second to offer in all, spread over the clients (0: as fast as answers come)")
	fs.IntVar(&c.followers, "followers", 0, "consumers following the run's events, to measure publish-to-delivery latency (0: none)")
	fs.Uint64Var(&c.seed, "seed", 0, "seed of the generated ids (default: from the clock, fresh every run)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case c.rate < 0:
		return nil, errors.New("-rate must not be negative")
	case c.followers < 0:
		return nil, errors.New("-followers must not be negative")
	case c.clients < 1 || c.batch < 1 || c.events < 1:
		return nil, errors.New("-clients, -batch and -events must be positive")
	case c.dups < 0 || c.dups >= 1:
		return nil, errors.New("-dups must be at least 0 and below 1")
	case c.ids != "uuid" && c.ids != "seq":
		return nil, fmt.Errorf("-ids must be uuid or seq, not %q", c.ids)
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	return c, nil
}

// tally is what the clients report, updated as they go.
type tally struct {
	events, requests, processed, duplicates, failures atomic.Int64
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	client, err := httpapi.NewClient(cfg.url, &httpapi.ClientOptions{Token: cfg.token})
	if err != nil {
		return err
	}
	before, err := client.Stats(ctx)
	if err != nil {
		return fmt.Errorf("reading %s/stats before the run: %w", cfg.url, err)
	}

	requests := (cfg.events + cfg.batch - 1) / cfg.batch
	var deadline time.Time
	if cfg.duration > 0 {
		requests = math.MaxInt
		deadline = time.Now().Add(cfg.duration)
	}
	var (
		t         tally
		next      atomic.Int64 // requests handed out
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, min(requests, 1<<20))
		made      atomic.Int64 // distinct ids generated
		firstErr  error
		wg        sync.WaitGroup
	)
	amount := fmt.Sprintf("%d events", requests*cfg.batch)
	if cfg.duration > 0 {
		amount = "events for " + cfg.duration.String()
	}
	if cfg.rate > 0 {
		amount += fmt.Sprintf(" at %.0f events/s", cfg.rate)
	}
	fmt.Fprintf(stdout, "eventagg-load: %s to %s, %d clients, batch %d, %.0f%% duplicates, %s ids\n",
		amount, cfg.url, cfg.clients, cfg.batch, cfg.dups*100, cfg.ids)
	topic := "load"
	var fl *followers
	if cfg.followers > 0 {
		topic = "load-" + strconv.FormatUint(cfg.seed, 36)
		fctx, cancel := context.WithCancel(ctx)
		defer cancel()
		if fl, err = follow(fctx, cfg.url, cfg.token, topic, cfg.followers); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "followers  %d following topic %s\n", cfg.followers, topic)
	}
	start := time.Now()
	for i := range cfg.clients {
		wg.Go(func() {
			gen := eventgen.New(cfg.seed+uint64(i)*0x9e3779b9, cfg.ids)
			gen.Topic = topic
			var mine []time.Duration
			defer func() {
				made.Add(int64(gen.Made()))
				mu.Lock()
				latencies = append(latencies, mine...)
				mu.Unlock()
			}()
			// With -rate, this client's k-th batch is due at start + offset + k*every.
			var every time.Duration
			if cfg.rate > 0 {
				every = time.Duration(float64(time.Second) * float64(cfg.batch*cfg.clients) / cfg.rate)
			}
			due := start.Add(every * time.Duration(i) / time.Duration(cfg.clients))
			for next.Add(1) <= int64(requests) && ctx.Err() == nil && (deadline.IsZero() || time.Now().Before(deadline)) {
				if every > 0 {
					if wait := time.Until(due); wait > 0 {
						select {
						case <-time.After(wait):
						case <-ctx.Done():
						}
					}
					due = due.Add(every)
					if !deadline.IsZero() && !time.Now().Before(deadline) {
						break
					}
				}
				batch := gen.Batch(cfg.batch, cfg.dups)
				sent := time.Now()
				if fl != nil { // the followers measure from here
					for i := range batch {
						batch[i].Timestamp = sent
					}
				}
				res, err := client.Publish(ctx, batch...)
				mine = append(mine, time.Since(sent))
				t.requests.Add(1)
				if err != nil {
					t.failures.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				t.events.Add(int64(len(batch)))
				t.processed.Add(int64(res.Processed))
				t.duplicates.Add(int64(res.Duplicates))
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var peakRSS int64
	if cfg.progress > 0 {
		tick := time.NewTicker(cfg.progress)
		defer tick.Stop()
		last, lastAt := int64(0), start
	progress:
		for {
			select {
			case <-done:
				break progress
			case now := <-tick.C:
				n := t.events.Load()
				line := fmt.Sprintf("%6.1fs  %9d events  %9.0f events/s  %6d requests  %d failed",
					now.Sub(start).Seconds(), n, float64(n-last)/now.Sub(lastAt).Seconds(), t.requests.Load(), t.failures.Load())
				if cfg.pid > 0 {
					if rss, _, err := processMemory(cfg.pid); err == nil {
						peakRSS = max(peakRSS, rss)
						line += fmt.Sprintf("  server RSS %d MiB", rss>>20)
					}
				}
				if cfg.db != "" {
					line += fmt.Sprintf("  db %d MiB", (fileSize(cfg.db)+fileSize(cfg.db+"-wal"))>>20)
				}
				fmt.Fprintln(stderr, line)
				last, lastAt = n, now
			}
		}
	}
	<-done
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return err
	}

	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))]
	}
	fmt.Fprintf(stdout, "sent       %d events in %d requests in %.2fs (%d failed)\n",
		t.events.Load(), t.requests.Load(), elapsed.Seconds(), t.failures.Load())
	fmt.Fprintf(stdout, "throughput %.0f events/s, %.0f requests/s\n",
		float64(t.events.Load())/elapsed.Seconds(), float64(t.requests.Load())/elapsed.Seconds())
	if cfg.rate > 0 {
		fmt.Fprintf(stdout, "offered    %.0f events/s: %.1f%% of it was sent\n", cfg.rate, 100*float64(t.events.Load())/elapsed.Seconds()/cfg.rate)
	}
	fmt.Fprintf(stdout, "latency    p50 %s  p90 %s  p99 %s  max %s\n",
		ms(pct(0.50)), ms(pct(0.90)), ms(pct(0.99)), ms(pct(1)))
	fmt.Fprintf(stdout, "answers    %d processed, %d duplicates dropped\n", t.processed.Load(), t.duplicates.Load())
	if cfg.pid > 0 {
		if rss, hwm, err := processMemory(cfg.pid); err == nil {
			fmt.Fprintf(stdout, "server     RSS %d MiB now, peak %d MiB\n", rss>>20, max(hwm, peakRSS)>>20)
		} else {
			fmt.Fprintf(stdout, "server     memory unknown: %v\n", err)
		}
	}
	if firstErr != nil {
		return fmt.Errorf("%d requests failed; the first: %w", t.failures.Load(), firstErr)
	}
	if fl != nil {
		if err := fl.report(stdout, t.processed.Load(), 30*time.Second); err != nil {
			return err
		}
	}

	after, err := client.Stats(ctx)
	if err != nil {
		return fmt.Errorf("reading %s/stats after the run: %w", cfg.url, err)
	}
	d := after.Counts
	d.Received -= before.Received
	d.UniqueProcessed -= before.UniqueProcessed
	d.DuplicateDropped -= before.DuplicateDropped
	d.Expired -= before.Expired
	var problems []string
	switch {
	case d.Expired == 0 && d.UniqueProcessed != made.Load():
		problems = append(problems, fmt.Sprintf("the server stored %d new events, but the run sent %d distinct ids", d.UniqueProcessed, made.Load()))
	case d.Expired > 0 && d.UniqueProcessed < made.Load():
		problems = append(problems, fmt.Sprintf("the server stored %d new events, fewer than the %d distinct ids the run sent", d.UniqueProcessed, made.Load()))
	}
	if after.UniqueProcessed != after.Stored+after.Expired {
		problems = append(problems, fmt.Sprintf("unique %d != stored %d + expired %d", after.UniqueProcessed, after.Stored, after.Expired))
	}
	if d.Received < t.events.Load() {
		problems = append(problems, fmt.Sprintf("the server received %d events, fewer than the %d acknowledged", d.Received, t.events.Load()))
	}
	if after.Received != after.UniqueProcessed+after.DuplicateDropped {
		problems = append(problems, fmt.Sprintf("received %d != unique %d + duplicates %d", after.Received, after.UniqueProcessed, after.DuplicateDropped))
	}
	fmt.Fprintf(stdout, "stats      +%d received, +%d unique, +%d duplicates, +%d expired, %d stored (other traffic during the run shows here too)\n",
		d.Received, d.UniqueProcessed, d.DuplicateDropped, d.Expired, after.Stored)
	if len(problems) > 0 {
		return errors.New("stats check failed: " + strings.Join(problems, "; "))
	}
	if d.Expired > 0 {
		fmt.Fprintln(stdout, "check      ok: at least one stored event per distinct id sent (some expired and came again); received = unique + duplicates; unique = stored + expired")
		return nil
	}
	fmt.Fprintln(stdout, "check      ok: one stored event per distinct id sent; received = unique + duplicates")
	return nil
}

// fileSize returns the size of the file at path, or 0.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func ms(d time.Duration) string { return strconv.FormatFloat(d.Seconds()*1000, 'f', 1, 64) + "ms" }

// processMemory reads the resident set size and its peak (VmRSS, VmHWM) of a
// Linux process, in bytes.
func processMemory(pid int) (rss, hwm int64, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(data)) {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			hwm = kb << 10
		}
	}
	return rss, hwm, nil
}
