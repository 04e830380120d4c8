package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// dialTimeout bounds each attempt to open a connection, at Open and
	// whenever the pool replaces a connection, unless the DSN's
	// connect_timeout sets another bound: during an outage in which the
	// server's host does not answer, an operation then fails after it
	// rather than wait for the operating system to give up on the dial.
	dialTimeout = 10 * time.Second
	// openPause is the pause before Open's first retry; each retry doubles
	// it, up to openMaxPause.
	openPause    = 100 * time.Millisecond
	openMaxPause = time.Second
)

// migrateWaiting runs s.migrate and, while it fails in a way that may pass
// (see transient), runs it again after a pause, until wait has passed since
// it began or ctx ends. It returns the last error.
func (s *Store) migrateWaiting(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	pause := openPause
	for {
		err := s.migrate(ctx)
		if err == nil || wait <= 0 || ctx.Err() != nil || !transient(err) {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("still failing after %v: %w", wait, err)
		}
		if sleep(ctx, min(pause, left)) != nil {
			return err
		}
		pause = min(2*pause, openMaxPause)
	}
}

// transient reports whether err, from connecting or from a statement, may
// pass once the server is back: the server refused or reset the connection
// or did not answer in time, or it said it is starting up, shutting down or
// out of connection slots. Errors of authentication, of a missing database
// or of the schema are not transient.
func transient(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code {
		case "57P01", // admin_shutdown
			"57P02", // crash_shutdown
			"57P03", // cannot_connect_now: starting up, shutting down, in recovery
			"53300": // too_many_connections
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection_exception
	}
	if _, ok := errors.AsType[net.Error](err); ok { // refused, reset, timed out, DNS
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || pgconn.Timeout(err)
}
