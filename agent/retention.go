package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quire-ha/quire/semisync"
	"github.com/quire-ha/quire/txlog"
)

// Log retention (docs/configuration.md, log.retention): every
// log.purge_interval the agent removes the oldest segments of its
// transaction log whose records all lie below
//
//   - the cluster's floor: with managers, the retain-from floor of the last
//     assignment (the lowest seqno any member may still need, 0 until every
//     member has reported to the leader); without managers, on a primary,
//     the lowest durable seqno its ack gate heard from the replicas (none
//     while a sync-set member has not reported since the agent started);
//     a replica without managers has no cluster floor;
//   - what this node needs itself (localKeepFrom): a replica's applier
//     restarts after its lowest restart row; a primary re-reads the records
//     after its last persisted ACK of the term for its ack gate;
//   - and whose last record committed more than log.retention ago
//     (log.retention 0: no age condition).
//
// Any bound that is unknown purges nothing. The log itself never removes
// the segment being appended to or the one holding the last record.

// defaultPurgeInterval applies when the configuration leaves
// log.purge_interval 0 (a configuration not read by config.LoadAgent).
const defaultPurgeInterval = time.Minute

// retentionMetrics are the bounds of the last retention pass.
type retentionMetrics struct {
	keepFrom, floor, local prometheus.Gauge
	passes                 prometheus.Counter
}

func newRetentionMetrics(reg prometheus.Registerer) (*retentionMetrics, error) {
	m := &retentionMetrics{
		keepFrom: prometheus.NewGauge(prometheus.GaugeOpts{Name: "quire_retention_keep_from_seqno",
			Help: "Retention: the log keeps this seqno and all after it (the lower of the cluster's floor and this node's own need); 0 purges nothing."}),
		floor: prometheus.NewGauge(prometheus.GaugeOpts{Name: "quire_retention_floor_seqno",
			Help: "Retention: the lowest seqno another member may still need (the managers' retain-from floor, or without managers the primary's ack gate); 0 while unknown, and on a replica without managers, which has no such floor."}),
		local: prometheus.NewGauge(prometheus.GaugeOpts{Name: "quire_retention_local_seqno",
			Help: "Retention: the lowest seqno this node needs itself (a replica's applier restart point, a primary's ack-gate replay start); 0 while unknown."}),
		passes: prometheus.NewCounter(prometheus.CounterOpts{Name: "quire_retention_passes_total",
			Help: "Retention passes run (one every log.purge_interval), whether or not they purged anything."}),
	}
	for _, c := range []prometheus.Collector{m.keepFrom, m.floor, m.local, m.passes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("agent: register retention metrics: %w", err)
		}
	}
	return m, nil
}

// runRetention purges the log every log.purge_interval until ctx is done.
func (a *Agent) runRetention(ctx context.Context) {
	interval := a.cfg.Log.PurgeInterval
	if interval <= 0 {
		interval = defaultPurgeInterval
	}
	m, err := newRetentionMetrics(a.reg)
	if err != nil {
		a.log.Warn("retention metrics not registered", "err", err)
	}
	log := a.log.With("component", "retention")
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastWhy string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, res, err := a.purgeOnce(time.Now())
		if m != nil {
			m.keepFrom.Set(float64(b.keepFrom))
			m.floor.Set(float64(b.floor))
			m.local.Set(float64(b.local))
			m.passes.Inc()
		}
		switch {
		case errors.Is(err, txlog.ErrClosed) || ctx.Err() != nil:
			return
		case err != nil:
			log.Error("purging the transaction log failed", "err", err)
		case b.why != "" && b.why != lastWhy:
			log.Info("retention: nothing may be purged", "why", b.why)
		case res.Segments > 0:
			log.Info("retention: purged", "segments", res.Segments, "records", res.Records, "bytes", res.Bytes,
				"first_seqno", res.FirstSeqno, "keep_from", b.keepFrom, "floor", b.floor, "local", b.local)
		}
		lastWhy = b.why
	}
}

// purgeBounds are the bounds of one retention pass; 0 means unknown.
type purgeBounds struct {
	floor, local, keepFrom uint64
	// why says what keeps the pass from purging anything, empty if the
	// bounds are known.
	why string
}

// purgeOnce runs one retention pass at now.
func (a *Agent) purgeOnce(now time.Time) (purgeBounds, txlog.PurgeResult, error) {
	a.mu.Lock()
	role := a.role
	a.mu.Unlock()
	b := a.retentionBounds(role)
	// A role change while the bounds were computed may have changed what
	// this node needs: skip this pass.
	a.mu.Lock()
	same := a.role == role
	a.mu.Unlock()
	if !same {
		b.keepFrom, b.why = 0, "the role changed"
	}
	if b.keepFrom == 0 {
		return b, txlog.PurgeResult{}, nil
	}
	var olderThan time.Time
	if r := a.cfg.Log.Retention; r > 0 {
		olderThan = now.Add(-r)
	}
	res, err := a.txl.Purge(b.keepFrom, olderThan)
	if err != nil {
		return b, res, fmt.Errorf("agent: retention: %w", err)
	}
	return b, res, nil
}

// retentionBounds works out the cluster's floor and this node's own need in
// role r, and the lower of the two; keepFrom is 0 (purge nothing) if either
// is unknown.
func (a *Agent) retentionBounds(r Role) purgeBounds {
	var b purgeBounds
	floor, why := a.clusterFloor(r)
	if floor != math.MaxUint64 {
		b.floor = floor
	}
	if floor == 0 {
		b.why = why
		return b
	}
	local, why := a.localKeepFrom(r)
	b.local = local
	if local == 0 {
		b.why = why
		return b
	}
	b.keepFrom = min(floor, local)
	return b
}

// clusterFloor is the lowest seqno another member may still need from this
// node's log: math.MaxUint64 for no bound (a replica without managers), 0
// with the reason when unknown.
func (a *Agent) clusterFloor(r Role) (uint64, string) {
	if a.managed() {
		asg, ok := a.assignment()
		switch {
		case !ok:
			return 0, "no assignment from the managers yet"
		case asg.RetainFrom == 0:
			return 0, "the managers' retain-from floor is 0 (a member has not reported to the leader, or holds no records)"
		}
		return asg.RetainFrom, ""
	}
	if r.Kind != RolePrimary {
		return math.MaxUint64, ""
	}
	a.mu.Lock()
	gate := a.gate
	a.mu.Unlock()
	if gate == nil {
		return 0, "the primary's ack gate is not running"
	}
	return gateFloor(gate.status().Replicas)
}

// gateFloor is a primary's floor without managers: the lowest durable
// seqno of the replicas its ack gate knows (sync-set members from the
// start, any other replica once it has streamed). A member that has not
// reported since the agent started counts as 0; no replica at all is 0 too,
// since one may still connect.
func gateFloor(replicas []semisync.ReplicaStatus) (uint64, string) {
	if len(replicas) == 0 {
		return 0, "the ack gate knows no replica (one may still connect)"
	}
	floor := uint64(math.MaxUint64)
	for _, rp := range replicas {
		if rp.Durable == 0 {
			return 0, fmt.Sprintf("replica %s has not reported a durable seqno since this agent started", rp.ID)
		}
		floor = min(floor, rp.Durable)
	}
	return floor, ""
}

// localKeepFrom is the lowest seqno this node needs itself in role r, or 0
// with the reason when unknown.
func (a *Agent) localKeepFrom(r Role) (uint64, string) {
	switch r.Kind {
	case RoleReplica:
		a.mu.Lock()
		ra := a.rep
		a.mu.Unlock()
		if ra == nil {
			return 0, "the replica's applier does not exist yet"
		}
		if ra.sup == nil {
			return 0, "the applier's configuration is refused"
		}
		from, ok := ra.sup.ReadFrom()
		if !ok {
			return 0, "the applier has not run yet or its channel count is changing"
		}
		// A restarted applier reads from the lowest restart row + 1.
		return from, ""
	case RolePrimary:
		return a.primaryKeepFrom(r.Epoch)
	}
	return 0, "no role"
}

// primaryKeepFrom is where a restarted primary agent of epoch re-reads its
// log for the ack gate (newGate): after the last ACK persisted in this term,
// else from the term's first seqno.
func (a *Agent) primaryKeepFrom(epoch uint64) (uint64, string) {
	term, err := a.loadExtractStart()
	if err != nil {
		return 0, err.Error()
	}
	if term == nil || term.Epoch != epoch {
		return 0, fmt.Sprintf("extraction of epoch %d has not recorded its start yet", epoch)
	}
	commit := term.FirstSeqno - 1
	if b, err := os.ReadFile(a.ackStatePath()); err == nil {
		var acked ackState
		if json.Unmarshal(b, &acked) == nil && acked.Epoch == epoch && acked.Seqno >= commit && acked.Seqno <= a.txl.LastSeqno() {
			commit = acked.Seqno
		}
	}
	return commit + 1, ""
}
