package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quire-ha/quire/binlog"
	"github.com/quire-ha/quire/semisync"
	"github.com/quire-ha/quire/txlog"
)

// ackState is the last semi-sync ACK the agent sent, persisted lazily: a
// lower bound of what the sync set holds, used to restart the binlog dump at
// a position MariaDB may take as acknowledged.
type ackState struct {
	Epoch uint64 `json:"epoch"`
	Seqno uint64 `json:"seqno"`
	File  string `json:"file"`
	Pos   uint64 `json:"pos"`
}

func (a *Agent) ackStatePath() string { return filepath.Join(a.cfg.DataDir, "acked.json") }

func (a *Agent) loadAckState() (*ackState, error) {
	b, err := os.ReadFile(a.ackStatePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: read %s: %w", a.ackStatePath(), err)
	}
	var st ackState
	if err := json.Unmarshal(b, &st); err != nil {
		// A damaged file only loses a lower bound; the term's start is safe.
		a.log.Error("acked.json is damaged; restarting the binlog dump from the term's start", "path", a.ackStatePath(), "err", err)
		return nil, nil
	}
	return &st, nil
}

// gateMetrics are the ack gate's Prometheus metrics.
type gateMetrics struct {
	ackWait     prometheus.Histogram
	commit      prometheus.Gauge
	degraded    prometheus.Gauge
	durable     *prometheus.GaugeVec
	lag         *prometheus.GaugeVec
	counted     *prometheus.GaugeVec
	staleReport prometheus.Counter
}

func newGateMetrics(reg prometheus.Registerer) (*gateMetrics, error) {
	m := &gateMetrics{
		ackWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "quire_semisync_ack_wait_seconds", Help: "Time from a transaction being durable in the primary's log to its semi-sync ACK (the replicas received it before that, while the primary fsynced).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		commit:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "quire_semisync_commit_seqno", Help: "Commit index: highest seqno acknowledged to MariaDB."}),
		degraded: prometheus.NewGauge(prometheus.GaugeOpts{Name: "quire_semisync_degraded", Help: "1 while commits are acknowledged without K sync-set replicas (policy degrade)."}),
		durable: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "quire_semisync_replica_durable_seqno", Help: "Durable seqno each replica reported."},
			[]string{"replica"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "quire_semisync_replica_lag_seqnos", Help: "Extracted seqno minus the replica's durable seqno."},
			[]string{"replica"}),
		counted: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "quire_semisync_replica_counted", Help: "1 if the replica's acks count (sync-set member, caught up)."},
			[]string{"replica"}),
		staleReport: prometheus.NewCounter(prometheus.CounterOpts{Name: "quire_semisync_stale_reports_total", Help: "Durable reports lower than an earlier one from the same replica."}),
	}
	for _, c := range []prometheus.Collector{m.ackWait, m.commit, m.degraded, m.durable, m.lag, m.counted, m.staleReport} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				continue
			}
			return nil, fmt.Errorf("agent: register gate metrics: %w", err)
		}
	}
	return m, nil
}

// ackGate drives a semisync.Gate for one primary term: it feeds it the
// extracted records and the replicas' reports, sends the ACKs it allows
// through the binlog source, and publishes the commit index to the log
// stream. It implements ship.AckSink and ship.CommitIndex.
type ackGate struct {
	a      *Agent
	epoch  uint64
	src    *binlog.Source
	log    *slog.Logger
	m      *gateMetrics
	record func(epoch, since uint64) error // records the degraded marker
	clear  func() error                    // clears it
	// degradeAfter is how long fewer than K members must be healthy before
	// policy degrade records the marker: replicas that reconnect within it
	// (an agent restart, the primary's own start-up) do not degrade.
	degradeAfter time.Duration

	mu        sync.Mutex
	g         *semisync.Gate
	changed   chan struct{}
	durableAt []time.Time // time each pending seqno became durable locally, from commit+1
	failed    error
	persistCh chan ackState
	needSince time.Time // when the gate first asked for a marker, zero if not
	published uint64    // the commit index last published to the stream and metrics
	// pendingReplay are records of the log not known to be ACKed, fed to
	// the gate once the binlog source is open.
	pendingReplay []txlog.Record
}

func (ag *ackGate) CommitIndex() uint64 {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	return ag.g.CommitIndex()
}

func (ag *ackGate) Changed() <-chan struct{} {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	return ag.changed
}

func (ag *ackGate) Connected(node string) {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	ag.check(ag.g.SetHealthy(node, true))
	ag.step()
}

func (ag *ackGate) Disconnected(node string) {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	ag.check(ag.g.SetHealthy(node, false))
	ag.step()
}

func (ag *ackGate) Durable(node string, seqno uint64) {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	ag.check(ag.g.Durable(node, seqno))
	ag.step()
}

// extracted tells the gate that recs are durable in the primary's log.
func (ag *ackGate) extracted(recs []txlog.Record) error {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	now := time.Now()
	for i := range recs {
		if err := ag.g.Extracted(recs[i].Seqno, semisync.BinlogPosition{File: recs[i].SourceFile, Pos: recs[i].SourcePos}); err != nil {
			return fmt.Errorf("agent: ack gate: %w", err)
		}
		ag.durableAt = append(ag.durableAt, now)
	}
	ag.step()
	return ag.failed
}

func (ag *ackGate) check(err error) {
	if err != nil {
		ag.log.Error("ack gate refused an event", "err", err)
	}
}

// step acts on what the gate allows now. Called with mu held.
func (ag *ackGate) step() {
	if since, ok := ag.g.NeedsDegradeMarker(); !ok {
		ag.needSince = time.Time{}
	} else if ag.needSince.IsZero() {
		ag.needSince = time.Now()
		ag.log.Warn("fewer than K sync-set replicas are healthy; commits wait", "degrade_in", ag.degradeAfter)
	} else if time.Since(ag.needSince) >= ag.degradeAfter {
		if err := ag.record(ag.epoch, since); errors.Is(err, errMarkerPending) {
			// asked; the next assignment answers
		} else if err != nil {
			ag.log.Error("could not record the degraded marker; commits keep waiting", "since", since, "err", err)
		} else {
			ag.check(ag.g.DegradeRecorded(since))
			ag.needSince = time.Time{}
		}
	}
	if ag.g.MarkerClearable() {
		if err := ag.clear(); err == nil {
			ag.check(ag.g.DegradeCleared())
		}
	}
	// Without its lease the primary acknowledges nothing: the managers
	// may be promoting another node (lease.go).
	for ag.a.leaseHeld(ag.epoch) {
		ack, ok := ag.g.Ready()
		if !ok {
			break
		}
		if err := ag.src.Ack(ack.Position.File, ack.Position.Pos); err != nil {
			ag.log.Error("semi-sync ACK not delivered", "seqno", ack.Seqno, "pos", ack.Position, "err", err)
			ag.failed = err
			break
		}
		ag.g.Sent(ack)
		select {
		case ag.persistCh <- ackState{Epoch: ag.epoch, Seqno: ack.Seqno, File: ack.Position.File, Pos: ack.Position.Pos}:
		default: // the writer is busy; a later ACK supersedes this one
		}
	}
	st := ag.g.Status()
	if c := st.CommitIndex; c > ag.published {
		n := int(c - ag.published)
		ag.published = c
		now := time.Now()
		for i := 0; i < n && i < len(ag.durableAt); i++ {
			ag.m.ackWait.Observe(now.Sub(ag.durableAt[i]).Seconds())
		}
		ag.durableAt = ag.durableAt[min(n, len(ag.durableAt)):]
		close(ag.changed)
		ag.changed = make(chan struct{})
	}
	ag.m.commit.Set(float64(st.CommitIndex))
	if st.DegradedAcking {
		ag.m.degraded.Set(1)
	} else {
		ag.m.degraded.Set(0)
	}
	for _, r := range st.Replicas {
		ag.m.durable.WithLabelValues(r.ID).Set(float64(r.Durable))
		ag.m.lag.WithLabelValues(r.ID).Set(float64(r.Lag))
		c := 0.0
		if r.Counted {
			c = 1
		}
		ag.m.counted.WithLabelValues(r.ID).Set(c)
	}
}

// status returns the gate's status for /status.
func (ag *ackGate) status() semisync.Status {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	return ag.g.Status()
}

// tick re-evaluates the gate periodically, for the time-based degrade rule.
func (ag *ackGate) tick(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ag.mu.Lock()
			ag.step()
			ag.mu.Unlock()
		}
	}
}

// persistLoop writes the newest ACK to acked.json, coalescing bursts.
func (ag *ackGate) persistLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case st := <-ag.persistCh:
			// A lower bound is enough: write at most every 100 ms, so the
			// file does not cost an fsync per ACK.
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			// Take the newest queued state.
			for more := true; more; {
				select {
				case st = <-ag.persistCh:
				default:
					more = false
				}
			}
			b, _ := json.Marshal(st)
			if err := writeState(ag.a.ackStatePath(), append(b, '\n')); err != nil {
				ag.log.Warn("could not persist the last ACK (a restart will re-read more binlog)", "err", err)
			}
		}
	}
}

// degradedState is the degraded marker of an agent without managers.
type degradedState struct {
	Epoch      uint64    `json:"epoch"`
	AsyncSince uint64    `json:"async_since"`
	At         time.Time `json:"at"`
}

func (a *Agent) degradedPath() string { return filepath.Join(a.cfg.DataDir, "degraded.json") }

// recordDegraded records "asynchronous since seqno since" before the gate
// acknowledges without K replicas. Without managers the record is a file
// beside the log (and a loud log line); with managers it goes to Raft.
// It runs under the gate's lock: it must not call back into the gate.
func (a *Agent) recordDegraded(epoch, since uint64) error {
	st := degradedState{Epoch: epoch, AsyncSince: since, At: time.Now().UTC()}
	b, _ := json.Marshal(st)
	if err := writeState(a.degradedPath(), append(b, '\n')); err != nil {
		return err
	}
	a.log.Error("DEGRADED: fewer than K sync-set replicas are healthy; commits are acknowledged WITHOUT them from now on (policy degrade). A failover may lose transactions from this seqno on.",
		"async_since", since)
	return nil
}

// clearDegraded removes the marker once K replicas hold everything again.
func (a *Agent) clearDegraded() error {
	if err := os.Remove(a.degradedPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	a.log.Warn("no longer degraded: K sync-set replicas hold every acknowledged transaction again")
	return nil
}
