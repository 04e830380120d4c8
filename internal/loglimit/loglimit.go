// Package loglimit keeps a repeated error from flooding a log: a Limiter
// lets the first record through, then at most one per interval, each
// telling how many were held back since the last.
package loglimit

import (
	"sync"
	"time"
)

// Limiter decides which of a stream of records to log. The zero value is
// not usable: make one with New. It is safe for concurrent use.
type Limiter struct {
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex
	last       time.Time // when a record was last let through; zero if never
	suppressed int       // records held back since then
}

// New returns a Limiter that lets through at most one record per every.
func New(every time.Duration) *Limiter {
	return &Limiter{every: every, now: time.Now}
}

// Allow reports whether to log the record at hand, and if so how many
// records were held back before it since the last one logged.
func (l *Limiter) Allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return false, 0
	}
	l.last, suppressed, l.suppressed = now, l.suppressed, 0
	return true, suppressed
}
