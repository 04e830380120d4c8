package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/eventagg/eventagg"
	"github.com/jackc/pgx/v5"
)

// Following across replicas: each Append that stores events notifies the
// channel of its schema in its transaction, so that PostgreSQL delivers the
// notification to the listeners once the events are committed; Watch
// listens on that channel on a connection of its own.

// Bounds of [Store.Watch].
const (
	// watchPause is the pause before the first attempt to reconnect; it
	// doubles after each failed attempt, up to watchMaxPause.
	watchPause    = 100 * time.Millisecond
	watchMaxPause = 5 * time.Second
	// watchGiveUp is how long Watch tries to reconnect before it returns
	// the last error, for the Aggregator to log.
	watchGiveUp = 15 * time.Second
	// watchIdle is how long the connection may go without a notification
	// before Watch checks that it is still up.
	watchIdle = 30 * time.Second
	// watchTimeout bounds connecting, LISTEN and that check.
	watchTimeout = 10 * time.Second
)

// channelName returns the notification channel of a schema: "eventagg."
// followed by the schema name if that fits in an identifier (63 bytes), or
// else by a hash of it. The payload of a notification is the schema name, by
// which a listener tells the schemas of one hash apart.
func channelName(schema string) string {
	const prefix, maxIdentifier = "eventagg.", 63
	if len(prefix)+len(schema) <= maxIdentifier {
		return prefix + schema
	}
	h := fnv.New64a()
	h.Write([]byte(schema))
	return prefix + "#" + strconv.FormatUint(h.Sum64(), 16)
}

// Watch implements [eventagg.Watcher]: it calls changed soon after an
// Append by any Store on the same database and schema (another replica's
// included) commits events, until ctx ends or the Store is closed. It
// returns ctx's error if ctx ended, and ErrClosed if Close was called.
// changed must not block: while it runs, no notification is read.
//
// Watch holds a connection of its own, outside the pool, made from the
// same DSN: each Watch under way uses one connection of the server beyond
// MaxConns. On it, Watch LISTENs on the channel of the schema, then
// calls changed once, as events may have been stored before it listened;
// it checks the connection when it has received no notification for 30s.
// While listings are held back by an Append in flight (see
// [Store.StoreMetrics]), it also calls changed every 50 ms.
// When the connection fails, Watch reconnects after a pause that starts at
// 100 ms and doubles up to 5 s, and calls changed once it listens again, as
// it cannot tell which notifications it missed. If it cannot reconnect
// within about 15 s, it returns the last error; it may then be called again.
func (s *Store) Watch(ctx context.Context, changed func()) error {
	s.watchMu.Lock()
	if s.closed.Load() {
		s.watchMu.Unlock()
		return eventagg.ErrClosed
	}
	s.watches.Add(1)
	s.watchMu.Unlock()
	defer s.watches.Done()

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.stopped, cancel)()

	pause := watchPause
	var failing time.Time // since when connecting has failed; zero when it has not
	for {
		listened, err := s.listen(ctx, changed)
		if ctx.Err() != nil {
			if err := parent.Err(); err != nil {
				return err
			}
			return eventagg.ErrClosed
		}
		if listened {
			pause, failing = watchPause, time.Time{}
		} else if failing.IsZero() {
			failing = time.Now()
		} else if time.Since(failing) >= watchGiveUp {
			return fmt.Errorf("postgres: watch schema %q: %w", s.schema, err)
		}
		sleep(ctx, pause) // an end of ctx is seen at the top of the loop
		pause = min(2*pause, watchMaxPause)
	}
}

// listen connects, LISTENs on the schema's channel, calls changed, then
// calls it for each notification of the schema until the connection fails
// or ctx ends; it returns the error and whether it got as far as
// listening.
func (s *Store) listen(ctx context.Context, changed func()) (listened bool, err error) {
	tctx, cancel := context.WithTimeout(ctx, watchTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(tctx, s.pool.Config().ConnConfig)
	if err != nil {
		return false, err
	}
	defer func() {
		// Close sends Terminate; the bound matters only on a stalled
		// connection, which is closed at the bound anyway.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(ctx)
	}()
	if _, err := conn.Exec(tctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return false, err
	}
	changed()
	for {
		// While listings are held back, no notification may come when the
		// Append that holds them back ends: the callers are woken to list
		// again every heldBackPoll. Otherwise the wait ends early if
		// listings become held back (heldContext is read first, so that a
		// change after it cancels the context this wait watches).
		hc := s.heldContext()
		held, wait := s.heldBack.Load() != 0, watchIdle
		if held {
			wait = heldBackPoll
		}
		wctx, cancel := context.WithTimeoutCause(ctx, wait, errWatchIdle)
		stop := context.AfterFunc(hc, cancel)
		n, err := conn.WaitForNotification(wctx)
		idle := wctx.Err() != nil && ctx.Err() == nil
		stop()
		timedOut := errors.Is(context.Cause(wctx), errWatchIdle)
		cancel()
		switch {
		case err == nil:
			if n.Channel == s.channel && n.Payload == s.schema {
				changed()
			}
		case idle && (held || !timedOut): // held back, or just now
			changed()
		case idle:
			pctx, cancel := context.WithTimeout(ctx, watchTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, err
			}
		default:
			return true, err
		}
	}
}

// errWatchIdle is the cause of the end of a wait for a notification that
// ran its course.
var errWatchIdle = errors.New("postgres: no notification within the wait")
