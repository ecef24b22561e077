package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Every role runs under a supervisor (DESIGN.md §6, Supervision): after any
// error it runs the role again, from the start of its path, with backoff,
// for as long as the role is assigned. No transient failure — the database
// down, a stream lost, a leader change — stops a role for good; errors that
// need a person are logged at ERROR, shown in /status and the managers'
// status, and counted, while the supervisor keeps trying.

// Backoff of role restarts and of following an assignment.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
	// backoffResetAfter: a run that lasted this long was healthy; the
	// next failure starts again from backoffMin.
	backoffResetAfter = 30 * time.Second
)

// backoff is a doubling delay between backoffMin and backoffMax.
type backoff struct{ next time.Duration }

// Next returns the delay to wait now and doubles the following one.
func (b *backoff) Next() time.Duration {
	if b.next < backoffMin {
		b.next = backoffMin
	}
	d := b.next
	b.next = min(2*b.next, backoffMax)
	return d
}

// Reset makes the next delay backoffMin again.
func (b *backoff) Reset() { b.next = 0 }

// errRoleEnded is what the supervisor records when a role's run returns
// without an error while it is still assigned: that is a bug, and it is
// retried like any failure.
var errRoleEnded = errors.New("the role's run ended by itself")

// superviseMetrics count role failures and restarts.
type superviseMetrics struct {
	restarts *prometheus.CounterVec
	failing  *prometheus.GaugeVec
	follow   prometheus.Counter
}

func newSuperviseMetrics(reg prometheus.Registerer) (*superviseMetrics, error) {
	m := &superviseMetrics{
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quire_agent_role_restarts_total",
			Help: "Times the supervisor ran a role again after it failed, by role.",
		}, []string{"role"}),
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "quire_agent_role_failing",
			Help: "1 while the role's last run failed and the supervisor waits to run it again, by role.",
		}, []string{"role"}),
		follow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quire_agent_follow_failures_total",
			Help: "Failed attempts to take the role the managers assigned (each is retried with backoff).",
		}),
	}
	for _, c := range []prometheus.Collector{m.restarts, m.failing, m.follow} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("agent: register supervisor metrics: %w", err)
		}
	}
	return m, nil
}

// supervise runs role r until ctx ends, running it again after every
// failure with backoff. up, called by the role when it reaches its steady
// state, clears the recorded error.
func (a *Agent) supervise(ctx context.Context, r Role) {
	var b backoff
	for {
		start := time.Now()
		err := a.runRole(ctx, r)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errRoleEnded
		}
		if time.Since(start) >= backoffResetAfter {
			b.Reset()
		}
		wait := b.Next()
		a.roleFailed(r, err, wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		a.sup.restarts.WithLabelValues(r.Kind).Inc()
		a.log.Info("running the role again", "role", r.Kind, "epoch", r.Epoch)
	}
}

// runRole is one run of role r.
func (a *Agent) runRole(ctx context.Context, r Role) error {
	switch r.Kind {
	case RolePrimary:
		return a.runPrimary(ctx, r.Epoch)
	case RoleReplica:
		return a.runReplica(ctx, r)
	default:
		a.ship.SetRole(false, r.Epoch)
		a.roleUp(r)
		<-ctx.Done()
		return nil
	}
}

// roleFailed records a failed run of r.
func (a *Agent) roleFailed(r Role, err error, retry time.Duration) {
	a.log.Error("role failed; the supervisor runs it again", "role", r.Kind, "epoch", r.Epoch, "err", err, "retry_in", retry)
	a.sup.failing.WithLabelValues(r.Kind).Set(1)
	a.mu.Lock()
	if a.role == r {
		a.roleErr, a.roleErrAt = err, time.Now()
	}
	a.mu.Unlock()
	// Report now: when the primary's binlog dump broke because mariadbd
	// died, the managers' fast path acts on this heartbeat. The backoff
	// spaces failures, so this adds at most one heartbeat per retry.
	select {
	case a.hbNow <- struct{}{}:
	default:
	}
}

// roleUp records that role r reached its steady state: the primary serves,
// a replica's stream was accepted. The last error is cleared.
func (a *Agent) roleUp(r Role) {
	a.sup.failing.WithLabelValues(r.Kind).Set(0)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.role == r {
		a.roleErr = nil
	}
}
