package loglimit

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	l := New(time.Second)
	l.now = func() time.Time { return now }
	type step struct {
		after      time.Duration
		ok         bool
		suppressed int
	}
	for i, s := range []step{
		{0, true, 0},                       // the first goes through
		{100 * time.Millisecond, false, 0}, // held back
		{100 * time.Millisecond, false, 0},
		{900 * time.Millisecond, true, 2}, // a second after the first: it tells of the two
		{2 * time.Second, true, 0},
	} {
		now = now.Add(s.after)
		if ok, n := l.Allow(); ok != s.ok || n != s.suppressed {
			t.Errorf("step %d: Allow() = %v, %d; want %v, %d", i, ok, n, s.ok, s.suppressed)
		}
	}
}
