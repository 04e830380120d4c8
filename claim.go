package eventagg

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Process-once: a service that must process each delivery once (a webhook
// receiver, a queue consumer) claims the delivery's key before doing the
// work, and completes the claim after it: the completion stores the event
// like Publish, and marks the key done, in one transaction. A crash between
// claim and completion leaves the claim to lapse with its lease, so that a
// redelivery is processed again (at least once); a delivery whose key is
// done is acknowledged without being processed again (completed once).

// ClaimStatus is what [Claimer.Claim] found.
type ClaimStatus uint8

const (
	// Claimed: the caller holds the key until the claim's lease ends; do the
	// work, then Complete or Release the claim.
	Claimed ClaimStatus = iota + 1
	// Done: the key is stored (completed, or published): acknowledge the
	// delivery without doing the work again.
	Done
	// Busy: another worker holds a live claim on the key, until the claim's
	// Expires: come back later (an HTTP receiver answers 409 or 503 with
	// Retry-After).
	Busy
)

// String returns "claimed", "done" or "busy".
func (s ClaimStatus) String() string {
	switch s {
	case Claimed:
		return "claimed"
	case Done:
		return "done"
	case Busy:
		return "busy"
	}
	return fmt.Sprintf("ClaimStatus(%d)", uint8(s))
}

// Claim is the answer of [Claimer.Claim]: its Status, and for a claim held
// (Claimed) or in another's hands (Busy), when its lease ends.
type Claim struct {
	Key     Key         // the key claimed
	Status  ClaimStatus // what the claim found: Claimed, Done or Busy
	Expires time.Time   // Claimed and Busy: when the lease ends
	// Token fences the claim: it grows with every claim of any key, and
	// Complete and Release act only if the key's claim still has it, so a
	// claimant whose lease lapsed and whose key was claimed again cannot
	// complete. Zero unless Claimed.
	Token int64
}

// ClaimCounts counts claims, for [Stats].
type ClaimCounts struct {
	// Active is the number of claims held now, their lease running.
	Active int64 `json:"active"`
	// Expired is the number of claims whose lease ran out before they were
	// completed or released (the claimant crashed, or took too long),
	// since the store was created.
	Expired int64 `json:"expired"`
}

// ErrClaimLost is returned by Complete and Release when the claim is no
// longer held: its lease ran out and the key was claimed again (or its
// claim was completed or released already). Nothing was stored or counted.
var ErrClaimLost = errors.New("eventagg: claim lost: its lease ran out and the key was claimed again, or it was completed or released already")

// ErrNoClaims is returned by the Aggregator's claim methods when its store
// does not implement [Claimer].
var ErrNoClaims = errors.New("eventagg: the store does not implement Claimer")

// Claimer is implemented by stores that hold claims, as this module's
// memory, SQLite and PostgreSQL stores do. Claims share the store's
// transactions with events: a completion stores its event and ends its
// claim atomically. Claims of keys that are not completed hold no event
// and move no counter but ClaimCounts.
type Claimer interface {
	// Claim claims key for lease from now, unless the key is stored (Done)
	// or another live claim holds it (Busy). A claim whose lease ran out
	// is taken over, and counted as expired.
	Claim(ctx context.Context, key Key, lease time.Duration, now time.Time) (Claim, error)
	// Complete stores event, whose key is c's, as Append would (it may
	// turn out a duplicate if the key was published meanwhile), and ends
	// c, in one transaction, durable when Complete returns. It returns
	// ErrClaimLost, having stored nothing, if c is no longer held: its
	// lease ran out and the key was claimed again. A claim whose lease ran
	// out but that nobody took over completes.
	Complete(ctx context.Context, c Claim, event Event, opts AppendOptions) (Outcome, error)
	// Release ends c without storing anything, so that the key can be
	// claimed at once; ErrClaimLost if c is no longer held.
	Release(ctx context.Context, c Claim) error
	// ClaimCounts counts the claims, the lease of each judged at now.
	ClaimCounts(ctx context.Context, now time.Time) (ClaimCounts, error)
}

// claimer returns the store as a Claimer, or ErrNoClaims.
func (a *Aggregator) claimer() (Claimer, error) {
	if c, ok := a.store.(Claimer); ok {
		return c, nil
	}
	return nil, ErrNoClaims
}

// Claim claims key for lease (see [Claimer.Claim]), after checking that
// the Aggregator is open. Its answer's Status says what to do: Claimed,
// do the work and then Complete (or Release on failure); Done, acknowledge
// without doing it; Busy, come back after Expires. Errors of the store are
// wrapped in [ErrStore].
func (a *Aggregator) Claim(ctx context.Context, key Key, lease time.Duration) (Claim, error) {
	c, err := a.claimer()
	if err != nil {
		return Claim{}, err
	}
	// The key obeys the rules of an event's: it becomes one on Complete.
	if err := (&Event{Topic: key.Topic, EventID: key.EventID}).Validate(0); err != nil {
		return Claim{}, err
	}
	now := a.now()
	if lease <= 0 || now.Add(lease).After(maxTimestamp) {
		// Stores keep a lease's end in nanoseconds: one past 2262 would wrap
		// round into the past, and the claim would lapse at once.
		return Claim{}, fmt.Errorf("eventagg: a claim's lease must be positive and end before 2262, not %v", lease)
	}
	if err := a.open(); err != nil {
		return Claim{}, err
	}
	cl, err := c.Claim(ctx, key, lease, now)
	return cl, writeError(ctx, err)
}

// Complete stores e, the event of claim c, and marks its key done, in one
// transaction: see [Claimer.Complete]. e is validated first, and must have
// c's key. It returns [ErrClaimLost] if c is no longer held (nothing is
// stored), and otherwise e's outcome: Stored, or Duplicate (or Conflict)
// if the key was published meanwhile. A nil error means durable. With
// [Options].RejectConflicts, a conflict is a [*ConflictError] and the
// claim is left held.
func (a *Aggregator) Complete(ctx context.Context, c Claim, e Event) (Outcome, error) {
	cl, err := a.claimer()
	if err != nil {
		return Outcome{}, err
	}
	if c.Status != Claimed {
		return Outcome{}, fmt.Errorf("eventagg: Complete needs a claim that was Claimed, not %v", c.Status)
	}
	if e.Key() != c.Key {
		return Outcome{}, fmt.Errorf("%w: the event's key %v is not the claim's %v", ErrInvalidEvent, e.Key(), c.Key)
	}
	if e.Timestamp.IsZero() {
		e.Timestamp = a.now().UTC()
	}
	if err := ValidateBatch([]Event{e}); err != nil {
		return Outcome{}, err
	}
	if err := a.open(); err != nil {
		return Outcome{}, err
	}
	// The commit is visible before it is durable, as the writer's are: a
	// Tail must not hand its event out before Complete returns.
	a.durability.inflight.Add(1)
	o, err := cl.Complete(ctx, c, e, AppendOptions{RejectConflicts: a.reject, AcceptedAt: a.now()})
	if err != nil {
		a.durability.inflight.Add(-1)
		if errors.Is(err, ErrClaimLost) {
			return Outcome{}, err
		}
		var ce *ConflictError
		if errors.As(err, &ce) {
			return Outcome{}, err
		}
		return Outcome{}, writeError(ctx, err)
	}
	// Durable: and with it every commit before it (a write-ahead log is
	// made durable in order), so the Tails' bound may move past it.
	outs := []Outcome{o}
	a.durability.committed(outs)
	a.durability.madeDurable(outs)
	a.wakeup.wake()
	return o, nil
}

// Release ends claim c without storing anything, so that the next delivery
// of its key can claim it at once: see [Claimer.Release].
func (a *Aggregator) Release(ctx context.Context, c Claim) error {
	cl, err := a.claimer()
	if err != nil {
		return err
	}
	if c.Status != Claimed {
		return fmt.Errorf("eventagg: Release needs a claim that was Claimed, not %v", c.Status)
	}
	err = cl.Release(ctx, c)
	if errors.Is(err, ErrClaimLost) {
		return err
	}
	return writeError(ctx, err)
}

// Once processes e once: it claims e's key for lease, runs fn if the claim
// is Claimed, and then completes the claim (storing e) if fn returned nil,
// or releases it if fn failed, so that a redelivery can try again. It
// returns the claim, whose Status tells what happened:
//
//   - Claimed with a nil error: fn ran, and e is stored and its key done;
//   - Claimed with fn's error: fn failed, the claim was released, nothing
//     was stored; with another error, the completion failed: ErrClaimLost
//     if fn ran past its lease and another worker took the key over, or
//     the store's error (the claim was then released, so that the next
//     delivery runs fn again at once);
//   - Done: the key was done before; fn did not run;
//   - Busy: another worker holds the key until the claim's Expires; fn did
//     not run.
//
// e is validated first: an invalid event is a [*ValidationError], and fn
// does not run. fn's context ends when the lease does, so that work running past its
// lease is told to stop. A crash while fn runs leaves the claim to lapse
// with its lease: the next delivery after that runs fn again. So fn runs
// at least once per key, and its completion is recorded exactly once.
func (a *Aggregator) Once(ctx context.Context, e Event, lease time.Duration, fn func(ctx context.Context) error) (Claim, error) {
	// The event is checked before the work, which must not run for an
	// event that cannot be completed.
	if err := ValidateBatch([]Event{e}); err != nil {
		return Claim{}, err
	}
	c, err := a.Claim(ctx, e.Key(), lease)
	if err != nil || c.Status != Claimed {
		return c, err
	}
	work, cancel := context.WithDeadline(ctx, c.Expires)
	err = fn(work)
	cancel()
	if err != nil {
		return c, a.releaseAfter(ctx, c, err)
	}
	if _, err = a.Complete(ctx, c, e); err != nil && !errors.Is(err, ErrClaimLost) {
		// Not completed (or in doubt): released, so that the next delivery
		// need not wait out the lease. If the completion did commit, the
		// claim is gone and the release finds nothing to do.
		return c, a.releaseAfter(ctx, c, err)
	}
	return c, err
}

// releaseAfter releases c after err, with a context of its own (err may
// come from ctx ending, and the claim should not wait out its lease for
// that), and returns err, joined with the release's error if it failed.
func (a *Aggregator) releaseAfter(ctx context.Context, c Claim, err error) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if rerr := a.Release(rctx, c); rerr != nil && !errors.Is(rerr, ErrClaimLost) {
		return errors.Join(err, fmt.Errorf("releasing the claim: %w", rerr))
	}
	return err
}

// open returns ErrClosed once Shutdown has begun.
func (a *Aggregator) open() error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		return ErrClosed
	}
	return nil
}

// writeError wraps err, an error of a write to the store, in ErrStore,
// unless it is nil, ErrClosed, or comes from ctx.
func writeError(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrClosed) {
		return err
	}
	return readError(ctx, err)
}
