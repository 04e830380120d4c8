// Command eventagg is the reference eventagg server: it serves the HTTP API of
// package httpapi over an embedded SQLite database, or over PostgreSQL when
// -db is a postgres:// URL, so that several replicas share one database.
//
//	eventagg [-addr :8080] [-db events.db] [flags]
//	eventagg -db postgres://user:password@host:5432/events [-db-schema eventagg]
//
// -sync, -max-db-size and -busy-timeout apply to SQLite only, -db-schema,
// -db-pool-size, -db-connect-timeout and -db-write-timeout to PostgreSQL
// only; given with the other store, they are refused.
//
// With PostgreSQL, the server listens once it has opened the schema: while
// the database cannot be reached, it retries for up to -db-connect-timeout,
// and then exits 1 naming the last error. Once serving, it outlives outages
// of the database: publishes get 503 with Retry-After and /health answers
// 503 until the database is back, and the pool reconnects by itself.
//
// Every flag can also be set with an environment variable (EVENTAGG_ADDR,
// EVENTAGG_DB, ...); a flag on the command line wins. Run eventagg -h for
// the list.
//
// With -on-conflict reject, a publish holding an event that conflicts with
// the stored copy of its key (same topic and event_id, another payload) is
// refused whole with 409; by default such an event is dropped like a
// duplicate and counted as a conflict.
//
// On SIGINT or SIGTERM it stops accepting connections, finishes the requests
// under way, drains the publish queue, closes the database and exits 0, all
// within -shutdown-timeout. If the queue does not drain in time (the store
// is stuck), it logs so and exits 1 without closing the store, which a
// write may still be in.
//
// eventagg -healthcheck asks a running server's /health (at -addr) and exits
// 0 if it is healthy, 1 if not: the container's HEALTHCHECK uses it. With
// -tls-cert it speaks TLS and trusts exactly that certificate.
//
// GET /metrics serves the handler's exposition, then the Go runtime's and
// the process's metrics (go_*, process_*).
//
// With -token, -token-file or EVENTAGG_TOKEN, POST /publish needs the bearer
// token, and with -token-reads so do the reads (GET /events, /stats,
// /metrics) and the status page (GET / for browsers); GET /health and
// GET /openapi.json never do. With -tls-cert and -tls-key it serves HTTPS
// only.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/eventagg/eventagg"
	"github.com/eventagg/eventagg/httpapi"
	"github.com/eventagg/eventagg/postgres"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise it comes from the module's build information.
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h: the usage was asked for, and printed
		}
		fmt.Fprintln(os.Stderr, errorLine(err))
		os.Exit(exitCode(err))
	}
}

// errorLine is the line printed for an error that stops the program: its
// message after "eventagg: ", which the library's errors already start with.
func errorLine(err error) string {
	msg := err.Error()
	if strings.HasPrefix(msg, "eventagg: ") {
		return msg
	}
	return "eventagg: " + msg
}

// exitCode is 2 for usage errors, as with the flag package, and 1 otherwise.
// (-h is not an error: the program exits 0 after the usage.)
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// The flags that apply to one store only: their help starts with "SQLite
// only:" or "PostgreSQL only:", and given with the other store (-db), on
// the command line or in the environment, they are refused.
var (
	sqliteOnlyFlags   = []string{"sync", "max-db-size", "busy-timeout"}
	postgresOnlyFlags = []string{"db-schema", "db-pool-size", "db-connect-timeout", "db-write-timeout"}
)

// config is what the flags and environment set.
type config struct {
	addr            string
	db              string
	sync            string
	maxBody         int64
	maxBatch        int // per request: httpapi.Options.MaxEventsPerRequest
	queueSize       int
	onConflict      string // drop or reject
	retention       time.Duration
	dedupWindow     time.Duration
	queueTimeout    time.Duration
	shutdownTimeout time.Duration
	maxDBSize       int64
	busyTimeout     time.Duration
	readHeader      time.Duration // http.Server.ReadHeaderTimeout
	readTimeout     time.Duration
	writeTimeout    time.Duration
	idleTimeout     time.Duration
	maxListings     int
	maxFollowers    int
	token           string // from -token or read from -token-file
	tokenFile       string
	tokenReads      bool
	tlsCert         string
	tlsKey          string
	dbSchema        string
	dbPoolSize      int
	dbConnect       time.Duration // postgres.Options.ConnectTimeout
	dbWrite         time.Duration // postgres.Options.WriteTimeout
	logFormat       string
	logLevel        slog.Level
	version         bool
	healthcheck     bool
}

// parseConfig reads flags from args, falling back to getenv for each flag
// not given on the command line.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("eventagg", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", ":8080", "`address` to listen on")
	fs.StringVar(&c.db, "db", "events.db", "SQLite database `path` (created if missing), or a postgres:// URL to share one PostgreSQL database between replicas")
	fs.StringVar(&c.dbSchema, "db-schema", postgres.DefaultSchema, "PostgreSQL only: the `schema` holding the tables; replicas that share events use the same")
	fs.IntVar(&c.dbPoolSize, "db-pool-size", 0, "PostgreSQL only: most `connections` to the database (0: the URL's pool_max_conns, or else the greater of 4 and the number of CPUs)")
	fs.DurationVar(&c.dbConnect, "db-connect-timeout", 30*time.Second, "PostgreSQL only: how long to wait for the database at start, retrying, before exiting 1 (0: try once)")
	fs.DurationVar(&c.dbWrite, "db-write-timeout", postgres.DefaultWriteTimeout, "PostgreSQL only: how long a write waits for the database's answer before it fails (503; its commit in doubt, resending is safe)")
	fs.StringVar(&c.sync, "sync", "full", "SQLite only: durability: full (fsync every commit), normal or off")
	fs.Int64Var(&c.maxBody, "max-body", httpapi.DefaultMaxBodyBytes, "largest publish request body, in `bytes`")
	fs.IntVar(&c.maxBatch, "max-batch", httpapi.DefaultMaxEventsPerRequest, "most `events` in one publish request")
	fs.IntVar(&c.queueSize, "queue-size", eventagg.DefaultQueueSize, "publish requests that may wait for the writer")
	fs.DurationVar(&c.retention, "retention", 0, "how long an event stays after it was accepted, e.g. 168h; then it leaves and is counted as expired (0: forever)")
	fs.DurationVar(&c.dedupWindow, "dedup-window", 0, "with -retention: how long keys stay, if longer: a copy arriving after its event left but within it is still a duplicate (0: keys leave with their events)")
	fs.StringVar(&c.onConflict, "on-conflict", "drop", "what becomes of an event resent with another payload: drop (counted as a conflict) or reject (the whole publish gets 409)")
	fs.DurationVar(&c.queueTimeout, "queue-timeout", time.Second, "how long a publish waits for room in a full queue before 503")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long shutdown waits for requests under way and the publish queue to drain")
	fs.Int64Var(&c.maxDBSize, "max-db-size", 0, "SQLite only: cap on the database file, in `bytes`; past it publishes get 503 as on a full disk (0: no cap)")
	fs.DurationVar(&c.busyTimeout, "busy-timeout", eventagg.DefaultBusyTimeout, "SQLite only: how long a write waits for a database lock held by another process")
	fs.DurationVar(&c.readHeader, "read-header-timeout", 10*time.Second, "time a client has to send the request headers")
	fs.DurationVar(&c.readTimeout, "read-timeout", 60*time.Second, "time a client has to send a whole request, body included")
	fs.DurationVar(&c.writeTimeout, "write-timeout", httpapi.DefaultWriteTimeout, "how long an answer waits for the client to take more of it before the connection is cut")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 120*time.Second, "how long an idle keep-alive connection stays open")
	fs.IntVar(&c.maxListings, "max-listings", httpapi.DefaultMaxListings, "most GET /events answers served at once (503 above)")
	fs.IntVar(&c.maxFollowers, "max-followers", httpapi.DefaultMaxFollowers, "most GET /events?follow=true streams served at once (503 above)")
	fs.StringVar(&c.token, "token", "", "bearer `token` that POST /publish requires (prefer -token-file or EVENTAGG_TOKEN: flags show in ps)")
	fs.StringVar(&c.tokenFile, "token-file", "", "`file` holding the bearer token")
	fs.BoolVar(&c.tokenReads, "token-reads", false, "require the token for GET /events, /stats, /metrics and the status page (GET /) too; /health and /openapi.json never need it")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate `file` (chain first to last): serve HTTPS; needs -tls-key")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key `file` for -tls-cert")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	fs.BoolVar(&c.healthcheck, "healthcheck", false, "check the health of the server at -addr and exit 0 if healthy")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: eventagg [flags]\n\nServes the eventagg HTTP API. Each flag also reads EVENTAGG_<NAME> from the environment\n(for example -max-body reads EVENTAGG_MAX_BODY); a flag given on the command line wins.\n"+
			"-db chooses the store, SQLite or PostgreSQL: the flags marked \"SQLite only\" or\n\"PostgreSQL only\" are refused with the other.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := envName(f.Name)
		if v := getenv(env); v != "" && !set[f.Name] {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, usageError{err}
	}
	// Flags of one store given with the other are refused, not ignored.
	given := func(names ...string) []string {
		var out []string
		for _, name := range names {
			if set[name] || getenv(envName(name)) != "" {
				out = append(out, "-"+name)
			}
		}
		return out
	}
	verb := func(flags []string) (string, string) {
		if len(flags) > 1 {
			return "apply", "them"
		}
		return "applies", "it"
	}
	if isPostgres(c.db) {
		if flags := given(sqliteOnlyFlags...); len(flags) > 0 {
			applies, them := verb(flags)
			return nil, usageError{fmt.Errorf("%s %s to SQLite only, and -db names a PostgreSQL database: remove %s (durability is PostgreSQL's synchronous_commit)", strings.Join(flags, ", "), applies, them)}
		}
	} else if flags := given(postgresOnlyFlags...); len(flags) > 0 {
		applies, them := verb(flags)
		return nil, usageError{fmt.Errorf("%s %s to PostgreSQL only, and -db names a SQLite file: remove %s", strings.Join(flags, ", "), applies, them)}
	}
	switch {
	case c.logFormat != "text" && c.logFormat != "json":
		return nil, usageError{fmt.Errorf("-log-format must be text or json, not %q", c.logFormat)}
	case c.retention < 0 || c.dedupWindow < 0:
		return nil, usageError{errors.New("-retention and -dedup-window must not be negative")}
	case c.dedupWindow > 0 && c.retention == 0:
		return nil, usageError{errors.New("-dedup-window needs -retention: without it, events and their keys stay forever")}
	case c.dedupWindow > 0 && c.dedupWindow < c.retention:
		return nil, usageError{fmt.Errorf("-dedup-window (%v) is shorter than -retention (%v): keys cannot leave before their events", c.dedupWindow, c.retention)}
	case c.onConflict != "drop" && c.onConflict != "reject":
		return nil, usageError{fmt.Errorf("-on-conflict must be drop or reject, not %q", c.onConflict)}
	case c.maxBody <= 0 || c.maxBatch <= 0 || c.queueSize <= 0:
		return nil, usageError{errors.New("-max-body, -max-batch and -queue-size must be positive")}
	case c.db == "":
		return nil, usageError{errors.New("-db must name a database file or a postgres:// URL")}
	case c.maxDBSize < 0:
		return nil, usageError{errors.New("-max-db-size must not be negative")}
	case c.dbPoolSize < 0 || c.dbPoolSize > math.MaxInt32:
		return nil, usageError{fmt.Errorf("-db-pool-size must be between 0 and %d", math.MaxInt32)}
	case c.dbConnect < 0:
		return nil, usageError{errors.New("-db-connect-timeout must not be negative")}
	case c.dbWrite <= 0:
		return nil, usageError{errors.New("-db-write-timeout must be positive")}
	case c.busyTimeout <= 0 || c.readHeader <= 0 || c.readTimeout <= 0 || c.writeTimeout <= 0 || c.idleTimeout <= 0 || c.shutdownTimeout <= 0:
		return nil, usageError{errors.New("-busy-timeout, -read-header-timeout, -read-timeout, -write-timeout, -idle-timeout and -shutdown-timeout must be positive")}
	case c.maxFollowers <= 0:
		return nil, usageError{errors.New("-max-followers must be positive")}
	case c.maxListings <= 0:
		return nil, usageError{errors.New("-max-listings must be positive")}
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return nil, usageError{errors.New("-tls-cert and -tls-key go together: give both or neither")}
	case c.token != "" && c.tokenFile != "":
		return nil, usageError{errors.New("give the token with -token or -token-file, not both")}
	}
	if c.tokenFile != "" {
		data, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("-token-file: %w", err)}
		}
		if c.token = strings.TrimSpace(string(data)); c.token == "" {
			return nil, usageError{fmt.Errorf("-token-file %s is empty", c.tokenFile)}
		}
	}
	switch {
	case strings.ContainsFunc(c.token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return nil, usageError{errors.New("the token must not hold spaces or control characters")}
	case c.tokenReads && c.token == "":
		return nil, usageError{errors.New("-token-reads needs a token (-token, -token-file or EVENTAGG_TOKEN)")}
	}
	if _, err := syncMode(c.sync); err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// envName maps a flag name to its environment variable: max-body -> EVENTAGG_MAX_BODY.
func envName(flagName string) string {
	return "EVENTAGG_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func syncMode(s string) (eventagg.Sync, error) {
	switch strings.ToLower(s) {
	case "full":
		return eventagg.SyncFull, nil
	case "normal":
		return eventagg.SyncNormal, nil
	case "off":
		return eventagg.SyncOff, nil
	}
	return 0, fmt.Errorf("-sync must be full, normal or off, not %q", s)
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// run is the whole program; main only wires it to the process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	if cfg.version {
		fmt.Fprintln(stdout, "eventagg", buildVersion())
		return nil
	}
	if cfg.healthcheck {
		return healthcheck(ctx, cfg)
	}
	var handler slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel})
	if cfg.logFormat == "json" {
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel})
	}
	log := slog.New(handler)
	return serve(ctx, cfg, log)
}

func serve(ctx context.Context, cfg *config, log *slog.Logger) (err error) {
	mode, _ := syncMode(cfg.sync) // checked by parseConfig
	var tlsConfig *tls.Config
	if cfg.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
		if err != nil {
			return fmt.Errorf("loading -tls-cert and -tls-key: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var store eventagg.Store
	if isPostgres(cfg.db) {
		// The wait for the database, then 30s for the migration, which may
		// wait for other replicas' queries; a signal ends both.
		log.Info("opening the PostgreSQL schema", "db", redact(cfg.db), "db_schema", cfg.dbSchema,
			"connect_timeout", cfg.dbConnect.String())
		openCtx, cancel := context.WithTimeout(ctx, cfg.dbConnect+30*time.Second)
		store, err = postgres.Open(openCtx, cfg.db, &postgres.Options{
			Schema:         cfg.dbSchema,
			MaxConns:       int32(cfg.dbPoolSize),
			ConnectTimeout: cfg.dbConnect,
			WriteTimeout:   cfg.dbWrite,
		})
		cancel()
	} else {
		store, err = eventagg.OpenSQLite(cfg.db, &eventagg.SQLiteOptions{
			Sync:         mode,
			BusyTimeout:  cfg.busyTimeout,
			MaxSizeBytes: cfg.maxDBSize,
			Logger:       log,
		})
	}
	if err != nil {
		return err
	}
	keepStore := false // set when a write may still be under way in the store
	defer func() {
		if keepStore {
			log.Error("store left open: a write may still be under way in it", "db", redact(cfg.db))
			return
		}
		if cerr := store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing the store: %w", cerr))
		}
		log.Info("store closed", "db", redact(cfg.db))
	}()
	agg, err := eventagg.New(store, &eventagg.Options{
		QueueSize:       cfg.queueSize,
		QueueTimeout:    cfg.queueTimeout,
		RejectConflicts: cfg.onConflict == "reject",
		Retention:       cfg.retention,
		DedupWindow:     cfg.dedupWindow,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	aggShutdown := false
	defer func() {
		if !aggShutdown { // returning before serving: nothing was published
			agg.Close()
		}
	}()

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	handler := httpapi.NewHandler(agg, &httpapi.Options{
		MaxBodyBytes:        cfg.maxBody,
		MaxEventsPerRequest: cfg.maxBatch,
		MaxListings:         cfg.maxListings,
		MaxFollowers:        cfg.maxFollowers,
		WriteTimeout:        cfg.writeTimeout,
		Logger:              log,
		Token:               cfg.token,
		TokenReads:          cfg.tokenReads,
	})
	srv := &http.Server{
		Handler:           withRuntimeMetrics(handler, runtimeRegistry(), log),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: cfg.readHeader,
		ReadTimeout:       cfg.readTimeout,
		IdleTimeout:       cfg.idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	srv.RegisterOnShutdown(handler.CloseFollows) // follow streams never end on their own
	served := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			served <- srv.ServeTLS(ln, "", "")
			return
		}
		served <- srv.Serve(ln)
	}()
	attrs := []any{"addr", ln.Addr().String(), "db", redact(cfg.db)}
	if isPostgres(cfg.db) {
		attrs = append(attrs, "db_schema", cfg.dbSchema)
	} else {
		attrs = append(attrs, "sync", cfg.sync)
	}
	if cfg.retention > 0 {
		attrs = append(attrs, "retention", cfg.retention.String(), "dedup_window", max(cfg.dedupWindow, cfg.retention).String())
	}
	log.Info("listening", append(attrs, "on_conflict", cfg.onConflict, "tls", tlsConfig != nil,
		"token", cfg.token != "", "token_reads", cfg.tokenReads, "version", buildVersion())...)

	var serveErr error
	select {
	case err := <-served:
		serveErr = fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	// One deadline for both drains: the requests under way, then what is
	// left of the queue. The requests get all but a fifth of it (at most
	// 5s), so that requests held open by slow clients leave the queue, which
	// drains at once unless the store is stuck, time to.
	log.Info("shutting down", "timeout", cfg.shutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	requestsCtx, cancelRequests := context.WithTimeout(shutdownCtx, cfg.shutdownTimeout-min(cfg.shutdownTimeout/5, 5*time.Second))
	defer cancelRequests()
	if err := srv.Shutdown(requestsCtx); err != nil {
		log.Warn("requests still under way at the shutdown timeout were cut", "error", err)
		srv.Close()
	}
	aggShutdown = true
	if err := agg.Shutdown(shutdownCtx); err != nil {
		// The writer may still be in the store: closing it under the
		// writer could lose what it is writing. Exiting releases it.
		keepStore = true
		log.Error("the publish queue did not drain within the shutdown timeout; the calls not yet written were refused, nothing of them stored",
			"timeout", cfg.shutdownTimeout.String(), "error", err)
		return errors.Join(serveErr, fmt.Errorf("draining the queue: %w", err))
	}
	log.Info("queue drained")
	return serveErr
}

// runtimeRegistry returns a registry of the Go runtime's metrics (go_*)
// and the process's (process_*).
func runtimeRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// withRuntimeMetrics serves h, and appends to every GET /metrics that h
// answers with 200 the metrics gathered from runtime, in the same text
// format. The eventagg_ series stay as h wrote them, and what h refuses
// (401 under -token-reads, 405, a bad query) gets nothing more.
func withRuntimeMetrics(h http.Handler, runtime prometheus.Gatherer, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			h.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.status != 0 && sw.status != http.StatusOK {
			return
		}
		mfs, err := runtime.Gather()
		if err != nil { // what could be gathered is still served
			log.LogAttrs(r.Context(), slog.LevelWarn, "gathering the runtime metrics", slog.Any("error", err))
		}
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(w, mf); err != nil {
				return // the client went away
			}
		}
	})
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets [http.ResponseController] reach the connection, for the
// write deadlines of the handler.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// isPostgres reports whether -db names a PostgreSQL database rather than a SQLite file.
func isPostgres(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// redact hides the password of a postgres:// URL, for logs.
func redact(db string) string {
	if !isPostgres(db) {
		return db
	}
	u, err := url.Parse(db)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	return u.Redacted()
}

// healthcheck asks the server listening at cfg.addr for /health, over TLS
// when cfg has a certificate.
func healthcheck(ctx context.Context, cfg *config) error {
	host, port, err := net.SplitHostPort(cfg.addr)
	if err != nil {
		return usageError{fmt.Errorf("-addr %q: %w", cfg.addr, err)}
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	scheme, httpClient := "http", &http.Client{}
	if cfg.tlsCert != "" {
		transport, err := pinnedTransport(cfg.tlsCert)
		if err != nil {
			return err
		}
		scheme, httpClient = "https", &http.Client{Transport: transport}
	}
	client, err := httpapi.NewClient(scheme+"://"+net.JoinHostPort(host, port),
		&httpapi.ClientOptions{MaxAttempts: 1, HTTPClient: httpClient})
	if err != nil {
		return err
	}
	if err := client.Health(ctx); err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	return nil
}

// pinnedTransport returns a transport that trusts exactly the first
// certificate of the PEM file at certFile: the server's own, which need not
// name the loopback address the health check dials, nor chain to a CA the
// container knows.
func pinnedTransport(certFile string) (*http.Transport, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("-tls-cert %s: no PEM certificate", certFile)
	}
	want, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert %s: %w", certFile, err)
	}
	return &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The usual chain and name checks are replaced by the pin below,
		// which VerifyConnection always runs.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, want.Raw) {
				return errors.New("the server's certificate is not the one in -tls-cert")
			}
			return nil
		},
	}}, nil
}
