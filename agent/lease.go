package agent

import (
	"time"

	"github.com/quire-ha/quire/manager"
)

// The primary lease (DESIGN.md §6, Fencing). With managers, the primary's
// agent holds a lease: every answer of the managers' leader that names it
// primary of its epoch renews it, counted from when the request was SENT.
// The managers promote another node only after the primary has been
// unreachable for failover_timeout, measured from when they last RECEIVED
// its heartbeat — later than the send — and the lease is shorter than that
// timeout. So when the managers may act, the lease has run out: the old
// primary has stopped acknowledging and made its database read-only
// itself, and no acknowledged commit can exist only behind a partition.
// Durations are measured on each host's monotonic clock; the clocks need
// not agree.

// minLease bounds the lease from below; the heartbeat interval must be
// well under it.
const minLease = 500 * time.Millisecond

// leaseFor returns the lease a primary holds from one answer: half the
// failover timeout, at least minLease and three heartbeats (so one late
// heartbeat does not cost the lease), but always under four fifths of the
// timeout, which the safety argument needs. An unknown timeout (0) counts
// as the default, 10 s.
func leaseFor(failoverTimeout, heartbeat time.Duration) time.Duration {
	if failoverTimeout <= 0 {
		failoverTimeout = 10 * time.Second
	}
	return min(max(failoverTimeout/2, minLease, 3*heartbeat), failoverTimeout*4/5)
}

// lease is what the agent knows of its primary lease.
type lease struct {
	epoch uint64    // the term the managers named this node primary of
	until time.Time // the lease holds before this (monotonic)
}

// renewed returns the lease after an answer asg to a request sent at sent.
// An answer that does not name this node primary ends the lease.
func (l lease) renewed(asg manager.Assignment, sent time.Time, heartbeat time.Duration) lease {
	if asg.Role != manager.RolePrimary || asg.Epoch == 0 {
		return lease{}
	}
	return lease{epoch: asg.Epoch, until: sent.Add(leaseFor(asg.FailoverTimeout, heartbeat))}
}

// holds reports whether the lease covers epoch at now.
func (l lease) holds(epoch uint64, now time.Time) bool {
	return l.epoch == epoch && epoch != 0 && now.Before(l.until)
}

// renewLease records an answer of the managers to a request sent at sent.
func (a *Agent) renewLease(asg manager.Assignment, sent time.Time) {
	a.mu.Lock()
	a.lease = a.lease.renewed(asg, sent, a.cfg.Replication.Heartbeat)
	a.mu.Unlock()
}

// leaseHeld reports whether this agent may act as primary of epoch now:
// always without managers; with managers only while its lease holds.
func (a *Agent) leaseHeld(epoch uint64) bool {
	if !a.managed() {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lease.holds(epoch, time.Now())
}
