package agent

import (
	"testing"
	"time"

	"github.com/quire-ha/quire/manager"
)

func TestLeaseFor(t *testing.T) {
	for _, tc := range []struct{ timeout, hb, want time.Duration }{
		{10 * time.Second, 500 * time.Millisecond, 5 * time.Second},
		{2 * time.Second, 500 * time.Millisecond, 1500 * time.Millisecond},
		{0, 100 * time.Millisecond, 5 * time.Second},
		{time.Second, 500 * time.Millisecond, 800 * time.Millisecond},
		{700 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond},
	} {
		if got := leaseFor(tc.timeout, tc.hb); got != tc.want {
			t.Errorf("leaseFor(%s, %s) = %s, want %s", tc.timeout, tc.hb, got, tc.want)
		}
	}
}

func TestLease(t *testing.T) {
	t0 := time.Unix(1000, 0)
	hb := 500 * time.Millisecond
	primary := manager.Assignment{Role: manager.RolePrimary, Epoch: 3, FailoverTimeout: 10 * time.Second}
	l := lease{}.renewed(primary, t0, hb)
	for _, tc := range []struct {
		name  string
		l     lease
		epoch uint64
		at    time.Time
		want  bool
	}{
		{"just renewed", l, 3, t0, true},
		{"counted from the send: expires 5s after it", l, 3, t0.Add(5*time.Second - time.Nanosecond), true},
		{"expired", l, 3, t0.Add(5 * time.Second), false},
		{"another epoch", l, 4, t0.Add(time.Second), false},
		{"no lease", lease{}, 0, t0, false},
		{"a replica's answer ends it", l.renewed(manager.Assignment{Role: manager.RoleReplica, Epoch: 4}, t0, hb), 3, t0, false},
		{"an answer before the first primary", l.renewed(manager.Assignment{Role: manager.RoleNone}, t0, hb), 3, t0, false},
		{"renewal moves it", l.renewed(primary, t0.Add(4*time.Second), hb), 3, t0.Add(8 * time.Second), true},
	} {
		if got := tc.l.holds(tc.epoch, tc.at); got != tc.want {
			t.Errorf("%s: holds = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestLeaseShorterThanFailoverTimeout: whatever the settings, a primary's
// lease runs out before the managers may promote another node.
func TestLeaseShorterThanFailoverTimeout(t *testing.T) {
	for timeout := 100 * time.Millisecond; timeout <= time.Hour; timeout += 250 * time.Millisecond {
		for _, hb := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 5 * time.Second, time.Minute} {
			if l := leaseFor(timeout, hb); l >= timeout {
				t.Fatalf("lease %s for failover timeout %s, heartbeat %s: not shorter", l, timeout, hb)
			}
		}
		if timeout > time.Minute {
			timeout += time.Minute
		}
	}
}
