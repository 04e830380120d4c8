package eventagg

import (
	"context"
	"time"
)

// memClaim is a claim the MemoryStore holds.
type memClaim struct {
	token   int64
	expires time.Time
}

// Claim implements [Claimer].
func (m *MemoryStore) Claim(ctx context.Context, key Key, lease time.Duration, now time.Time) (Claim, error) {
	if err := ctx.Err(); err != nil {
		return Claim{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Claim{}, ErrClosed
	}
	if _, ok := m.keys[key]; ok {
		return Claim{Key: key, Status: Done}, nil
	}
	if c, ok := m.claims[key]; ok {
		if c.expires.After(now) {
			return Claim{Key: key, Status: Busy, Expires: c.expires}, nil
		}
		m.claimsExpired++
	}
	m.claimToken++
	c := memClaim{token: m.claimToken, expires: now.Add(lease)}
	m.claims[key] = c
	return Claim{Key: key, Status: Claimed, Expires: c.expires, Token: c.token}, nil
}

// held reports whether c is the claim of its key, m.mu held.
func (m *MemoryStore) held(c Claim) bool {
	mc, ok := m.claims[c.Key]
	return ok && mc.token == c.Token
}

// Complete implements [Claimer].
func (m *MemoryStore) Complete(ctx context.Context, c Claim, event Event, opts AppendOptions) (Outcome, error) {
	if err := ctx.Err(); err != nil {
		return Outcome{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Outcome{}, ErrClosed
	}
	if !m.held(c) {
		return Outcome{}, ErrClaimLost
	}
	outcomes, err := m.appendLocked([]Event{event}, opts)
	if err != nil {
		return Outcome{}, err
	}
	delete(m.claims, c.Key)
	return outcomes[0], nil
}

// Release implements [Claimer].
func (m *MemoryStore) Release(ctx context.Context, c Claim) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if !m.held(c) {
		return ErrClaimLost
	}
	delete(m.claims, c.Key)
	return nil
}

// ClaimCounts implements [Claimer].
func (m *MemoryStore) ClaimCounts(ctx context.Context, now time.Time) (ClaimCounts, error) {
	if err := ctx.Err(); err != nil {
		return ClaimCounts{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ClaimCounts{}, ErrClosed
	}
	cc := ClaimCounts{Expired: m.claimsExpired}
	for _, c := range m.claims {
		if c.expires.After(now) {
			cc.Active++
		} else {
			cc.Expired++ // lapsed: it counts once taken over, or now
		}
	}
	return cc, nil
}
