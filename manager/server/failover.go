package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quire-ha/quire/api/agentpb"
	"github.com/quire-ha/quire/api/managerpb"
	"github.com/quire-ha/quire/consensus"
	"github.com/quire-ha/quire/failover"
	"github.com/quire-ha/quire/manager"
)

// The failover driver: the leader's loop that carries out the decisions of
// package failover (docs/failover.md). Every step reads the Raft state and
// the agents' positions afresh, so a new leader continues where an old one
// stopped: a term committed in Raft whose primary has not opened writes is
// promoted again, and nothing else is remembered across leaders.
//
// One failover, in order:
//  1. failover.Detect finds the primary failed (timeout with the replicas'
//     confirmation, or the fast path on a gone database);
//  2. the primary's agent is asked again (failover.Confirm);
//  3. the detection is committed to the decision log: only a leader with a
//     quorum gets past this point;
//  4. on the fast path the old primary's agent is fenced in the current
//     epoch, so that it ships nothing more while positions are collected;
//  5. every other member's agent is asked for its position, and
//     failover.PlanFailover elects among the sync set's answers;
//  6. SetPrimary commits epoch+1 with the certificate: from here on the
//     replicas refuse the old term's stream;
//  7. the candidate is told to Promote with the expected last seqno (it
//     applies its whole log, then opens writes), the old primary is fenced
//     in the new epoch if it answers, and the other replicas are repointed
//     (they would follow by heartbeat anyway).
//
// A refusal is recorded once per episode with its reason and retried every
// second.

// Defaults of the driver.
const (
	DefaultFailoverInterval = 100 * time.Millisecond
	// askTimeout bounds asking one agent for its status.
	askTimeout = 1500 * time.Millisecond
	// retryAfterRefusal is how long the driver waits before deciding again
	// after a refusal.
	retryAfterRefusal = time.Second
	// promoteTimeout bounds a Promote call: the candidate applies its whole
	// log first.
	promoteTimeout = 5 * time.Minute
	// fenceTimeout bounds a best-effort fence of the old primary.
	fenceTimeout = 2 * time.Second
)

// failoverDriver runs on every manager and acts only while it leads.
type failoverDriver struct {
	s        *Server
	agents   Agents
	auto     bool
	interval time.Duration
	log      *slog.Logger
	kick     chan struct{}
	met      *failoverMetrics

	mu sync.Mutex
	// view is what Status shows.
	view failoverView
	// watch is the detection state (failover.Detect).
	watch failover.Watch
	// episode names the epoch of the current bad period; recorded holds
	// the decision keys already recorded in it.
	episode  uint64
	recorded map[string]bool
	frozen   bool      // the old primary was fenced in its own epoch in this episode
	retryAt  time.Time // no new attempt before
	// promoted is the highest epoch whose primary this leader saw open
	// writes; lastPromote when it last told a pending one to promote.
	promoted    uint64
	lastPromote time.Time
}

// failoverView is the driver's state as Status shows it.
type failoverView struct {
	state, reason string
	since         time.Time
}

type failoverMetrics struct {
	detections   prometheus.Counter
	refusals     prometheus.Counter
	failovers    prometheus.Counter
	lastDuration prometheus.Gauge
}

func newFailoverMetrics(reg prometheus.Registerer) (*failoverMetrics, error) {
	m := &failoverMetrics{
		detections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quire_manager_failover_detections_total",
			Help: "Times this manager, as leader, found the primary failed and confirmed it (each is recorded in the decision log).",
		}),
		refusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quire_manager_failover_refusals_total",
			Help: "Failover attempts this manager refused (too few sync-set positions, anti-flapping, ...; see quire history).",
		}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quire_manager_failovers_total",
			Help: "Automatic failovers this manager committed (a new epoch in Raft).",
		}),
		lastDuration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "quire_manager_failover_last_duration_seconds",
			Help: "From the decision to fail over to the new primary's writes being open, for the last automatic failover this manager drove.",
		}),
	}
	for _, c := range []prometheus.Collector{m.detections, m.refusals, m.failovers, m.lastDuration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("manager server: register failover metrics: %w", err)
		}
	}
	return m, nil
}

func newFailoverDriver(s *Server, agents Agents, auto bool, interval time.Duration) *failoverDriver {
	d := &failoverDriver{s: s, agents: agents, auto: auto, interval: interval, log: s.logger.With("component", "failover"),
		kick: make(chan struct{}, 1), recorded: map[string]bool{}}
	d.view = failoverView{state: d.idleState()}
	return d
}

// poke makes the driver take a step soon (a heartbeat that may matter).
func (d *failoverDriver) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *failoverDriver) run() {
	defer d.s.wg.Done()
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		select {
		case <-d.s.done:
			return
		case <-t.C:
		case <-d.kick:
		}
		d.step(time.Now())
	}
}

// status is the driver's view for Status.
func (d *failoverDriver) status() *managerpb.FailoverStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return &managerpb.FailoverStatus{Automatic: d.auto, State: d.view.state, Reason: d.view.reason, SinceUnixMicro: unixMicro(d.view.since)}
}

func (d *failoverDriver) setView(state, reason string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.view.state != state {
		d.view.since = now
	}
	d.view.state, d.view.reason = state, reason
}

// reset forgets everything of a leadership term.
func (d *failoverDriver) reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.watch, d.episode, d.recorded, d.frozen, d.retryAt = failover.Watch{}, 0, map[string]bool{}, false, time.Time{}
	d.promoted, d.lastPromote = 0, time.Time{}
	d.view = failoverView{state: d.idleState(), reason: "this manager is not the leader"}
}

// step takes one detection step and acts on it.
func (d *failoverDriver) step(now time.Time) {
	if !d.s.node.IsLeader() {
		d.reset()
		return
	}
	d.s.mu.Lock()
	leaderSince := d.s.leaderSince
	pos := make(map[string]Position, len(d.s.positions))
	for k, v := range d.s.positions {
		pos[k] = v
	}
	d.s.mu.Unlock()
	if leaderSince.IsZero() {
		return
	}
	st := d.s.node.State()
	if st.Epoch == 0 || st.Primary == "" {
		d.setView(d.idleState(), "no primary yet (quire init)", now)
		return
	}
	in := detectInput(st, pos, now, leaderSince)
	d.mu.Lock()
	if d.episode != st.Epoch {
		d.episode, d.recorded, d.frozen, d.retryAt = st.Epoch, map[string]bool{}, false, time.Time{}
	}
	w, det := failover.Detect(d.watch, in)
	d.watch = w
	promoted := d.promoted
	d.mu.Unlock()

	pending := promotionPending(st, pos, promoted)
	if pending && det.Verdict == failover.Failed && det.Kind == failover.KindUnhealthy && pos[st.Primary].DatabaseHealthy {
		// A candidate that is still promoting reports the errors of the
		// role it is leaving; only its database or its silence count.
		det.Verdict = failover.Suspect
	}
	if det.Verdict != failover.Failed && pending {
		d.setView("promoting", fmt.Sprintf("waiting for %s to open writes as primary of epoch %d", st.Primary, st.Epoch), now)
		d.continuePromotion(st, now)
		return
	}
	if !pending && st.Epoch > promoted && writable(pos[st.Primary], st.Epoch) {
		d.mu.Lock()
		d.promoted = st.Epoch
		d.mu.Unlock()
	}
	switch det.Verdict {
	case failover.Healthy:
		d.mu.Lock()
		d.recorded, d.frozen, d.retryAt = map[string]bool{}, false, time.Time{}
		d.mu.Unlock()
		d.setView(d.idleState(), det.Reason, now)
		return
	case failover.Suspect:
		d.setView("suspect", det.Reason, now)
		return
	}
	if !d.auto {
		reason := det.Reason + "; automatic failover is off on this manager (failover.auto: false): fail over by hand"
		d.setView("failed", reason, now)
		d.recordOnce(decisionKey("auto-off"), consensus.DecisionRefusal, st.Epoch, st.Primary, reason, now)
		return
	}
	d.mu.Lock()
	wait := now.Before(d.retryAt)
	d.mu.Unlock()
	if wait {
		return
	}
	d.act(st, pos, det, now)
}

func (d *failoverDriver) idleState() string {
	if d.auto {
		return "healthy"
	}
	return "off"
}

// decisionKey names a recorded decision within an episode.
type decisionKey string

// recordOnce records a decision unless one with the same key was recorded
// in this episode. It reports whether the record is committed (or was
// already).
func (d *failoverDriver) recordOnce(key decisionKey, kind consensus.DecisionKind, epoch uint64, node, reason string, now time.Time) bool {
	d.mu.Lock()
	done := d.recorded[string(key)]
	d.mu.Unlock()
	if done {
		return true
	}
	if err := d.record(kind, epoch, node, reason, now); err != nil {
		return false
	}
	d.mu.Lock()
	d.recorded[string(key)] = true
	d.mu.Unlock()
	return true
}

// record commits one decision to the log.
func (d *failoverDriver) record(kind consensus.DecisionKind, epoch uint64, node, reason string, now time.Time) error {
	if len(reason) > consensus.MaxDecisionReason {
		reason = reason[:consensus.MaxDecisionReason]
	}
	ctx, cancel := d.context(d.s.cfg.RequestTimeout)
	defer cancel()
	_, err := d.s.node.Propose(ctx, consensus.RecordDecision{Decision: consensus.Decision{
		At: now, Kind: kind, Epoch: epoch, Node: node, By: d.s.id, Reason: reason}})
	if err != nil {
		d.log.Warn("failover: recording a decision failed (no quorum, or no longer leader?)", "kind", kind, "reason", reason, "err", err)
		return err
	}
	return nil
}

// context returns a context bounded by d and cancelled when the server
// closes.
func (d *failoverDriver) context(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	go func() {
		select {
		case <-d.s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// refuse records a refusal once per episode (per key: the reason without
// details that change between attempts) and waits before the next attempt.
func (d *failoverDriver) refuse(st consensus.State, node, key, reason string, now time.Time) {
	d.setView("refused", reason, now)
	key = "refusal:" + key
	d.mu.Lock()
	d.retryAt = now.Add(retryAfterRefusal)
	first := !d.recorded[key]
	d.mu.Unlock()
	if first {
		d.log.Error("failover refused", "epoch", st.Epoch, "primary", st.Primary, "reason", reason)
		if d.met != nil {
			d.met.refusals.Inc()
		}
	}
	d.recordOnce(decisionKey(key), consensus.DecisionRefusal, st.Epoch, node, reason, now)
}

// act carries out one failover attempt for a Failed detection.
func (d *failoverDriver) act(st consensus.State, pos map[string]Position, det failover.Detection, now time.Time) {
	prim, _ := st.Member(st.Primary)
	// 2. Ask the primary's agent again.
	pa := d.askPrimary(prim.AgentAddr)
	ok, why := failover.Confirm(det, pa)
	if !ok {
		d.setView("suspect", det.Reason+"; "+why, now)
		d.mu.Lock()
		d.retryAt = now.Add(retryAfterRefusal)
		d.mu.Unlock()
		d.recordOnce(decisionKey("unconfirmed:"+det.Key()), consensus.DecisionNote, st.Epoch, st.Primary, "detection not confirmed: "+det.Reason+"; "+why, now)
		return
	}
	// 3. Record the detection: a leader without a quorum stops here.
	reason := det.Reason + "; " + why
	d.mu.Lock()
	first := !d.recorded["detection:"+det.Key()]
	d.mu.Unlock()
	if !d.recordOnce(decisionKey("detection:"+det.Key()), consensus.DecisionDetection, st.Epoch, st.Primary, reason, now) {
		d.setView("failed", reason+"; could not record the decision in Raft (no quorum?): not acting", now)
		d.mu.Lock()
		d.retryAt = now.Add(retryAfterRefusal)
		d.mu.Unlock()
		return
	}
	if first {
		d.log.Error("primary failed", "epoch", st.Epoch, "primary", st.Primary, "kind", det.Kind, "fast", det.Fast, "reason", reason)
		if d.met != nil {
			d.met.detections.Inc()
		}
	} else if err := d.barrier(); err != nil {
		d.setView("failed", reason+"; not acting: "+err.Error(), now)
		return
	}
	d.setView("failed", reason, now)
	// 4. The fast path: the old primary's agent lives; stop its role so
	// that it ships nothing more while positions are collected.
	d.mu.Lock()
	freeze := det.Kind == failover.KindDatabaseGone && pa.Answered && !d.frozen
	d.frozen = d.frozen || freeze
	d.mu.Unlock()
	if freeze {
		ctx, cancel := d.context(fenceTimeout)
		_, err := d.agents.Fence(ctx, prim.AgentAddr, st.Epoch)
		cancel()
		d.log.Info("failover: stopped the old primary's role before collecting positions", "primary", st.Primary, "err", err)
	}
	// 5. Collect positions and decide.
	answers, missing := d.collect(st)
	reported := map[string]uint64{}
	for id, p := range pos {
		reported[id] = p.CommitIndex
	}
	plan, err := failover.PlanFailover(st, failover.PlanInput{Now: time.Now(), Answers: answers, Reported: reported})
	if err != nil {
		d.refuse(st, st.Primary, err.Error(), "failover: "+err.Error(), now)
		return
	}
	if !plan.Promote {
		r := plan.Reason
		if len(missing) > 0 {
			r += "; not answering: " + missing
		}
		d.refuse(st, plan.Candidate, plan.Reason, r, now)
		return
	}
	// 6. Commit the new term.
	plan.Command.By = d.s.id
	decided := time.Now()
	ctx, cancel := d.context(d.s.cfg.RequestTimeout)
	next, err := d.s.node.Propose(ctx, plan.Command)
	cancel()
	if err != nil {
		var ve *consensus.ValidationError
		if errors.As(err, &ve) {
			d.refuse(st, plan.Candidate, err.Error(), "the new term was refused: "+err.Error(), now)
			return
		}
		d.log.Error("failover: committing the new term failed; deciding again", "candidate", plan.Candidate, "err", err)
		d.mu.Lock()
		d.retryAt = now.Add(retryAfterRefusal)
		d.mu.Unlock()
		return
	}
	epoch := plan.Command.Epoch
	if d.met != nil {
		d.met.failovers.Inc()
	}
	if plan.LossPossible {
		d.log.Error("FAILOVER WITH POSSIBLE LOSS: the cluster was degraded; transactions acknowledged without K replicas may be missing on the new primary",
			"epoch", epoch, "primary", plan.Candidate, "warnings", plan.Warnings)
	}
	d.log.Warn("failover: new term committed", "epoch", epoch, "from", st.Primary, "to", plan.Candidate,
		"first_seqno", plan.Command.FirstSeqno, "reason", plan.Reason)
	d.setView("promoting", fmt.Sprintf("epoch %d committed: promoting %s", epoch, plan.Candidate), time.Now())
	d.promote(next, st.Primary, plan.ExpectLast, decided, det.Since)
}

// barrier makes sure this node still leads with a quorum.
func (d *failoverDriver) barrier() error {
	ctx, cancel := d.context(d.s.cfg.RequestTimeout)
	defer cancel()
	if err := d.s.node.Barrier(ctx); err != nil {
		return fmt.Errorf("this manager could not confirm its leadership (no quorum?): %w", err)
	}
	return nil
}

// promote carries out step 7 for the new term of st: Promote on the new
// primary, fence the old one, repoint the others.
func (d *failoverDriver) promote(st consensus.State, old string, expectLast uint64, decided, troubleSince time.Time) {
	cand, _ := st.Member(st.Primary)
	var wg sync.WaitGroup
	if m, ok := st.Member(old); ok {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := d.context(fenceTimeout)
			defer cancel()
			if _, err := d.agents.Fence(ctx, m.AgentAddr, st.Epoch); err != nil {
				d.log.Info("failover: the old primary's agent could not be fenced now; it fences itself when it hears of the new term", "node", old, "err", err)
			} else {
				d.log.Warn("failover: the old primary is fenced (read-only, client sessions killed)", "node", old, "epoch", st.Epoch)
			}
		}()
	}
	d.mu.Lock()
	d.lastPromote = time.Now()
	d.mu.Unlock()
	ctx, cancel := d.context(promoteTimeout)
	_, err := d.agents.Promote(ctx, cand.AgentAddr, st.Epoch, expectLast)
	cancel()
	now := time.Now()
	if err != nil {
		d.log.Error("failover: Promote failed; the candidate also takes the role by heartbeat, and this leader asks again", "node", cand.ID, "epoch", st.Epoch, "err", err)
		d.recordOnce(decisionKey(fmt.Sprintf("promote-failed:%d", st.Epoch)), consensus.DecisionNote, st.Epoch, cand.ID,
			fmt.Sprintf("Promote of %s in epoch %d failed: %v; retrying", cand.ID, st.Epoch, err), now)
		wg.Wait()
		return
	}
	took := now.Sub(decided)
	d.mu.Lock()
	d.promoted = max(d.promoted, st.Epoch)
	d.mu.Unlock()
	if d.met != nil {
		d.met.lastDuration.Set(took.Seconds())
	}
	msg := fmt.Sprintf("%s opened writes as primary of epoch %d, %s after the decision, %s after the old primary's trouble began",
		cand.ID, st.Epoch, took.Round(time.Millisecond), now.Sub(troubleSince).Round(time.Millisecond))
	d.log.Warn("failover: "+msg, "epoch", st.Epoch, "primary", cand.ID)
	d.record(consensus.DecisionNote, st.Epoch, cand.ID, msg, now)
	d.setView(d.idleState(), msg, now)
	d.repoint(st, old)
	wg.Wait()
}

// repoint tells every member but the new and the old primary to stream
// from the new primary, unless its last report shows it already does.
func (d *failoverDriver) repoint(st consensus.State, old string) {
	prim, _ := st.Member(st.Primary)
	pos := d.s.Positions()
	var wg sync.WaitGroup
	for _, m := range st.Members {
		if m.ID == st.Primary || m.ID == old {
			continue
		}
		if p, ok := pos[m.ID]; ok && p.Role == manager.RoleReplica && p.Epoch == st.Epoch {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := d.context(askTimeout)
			defer cancel()
			if _, err := d.agents.Repoint(ctx, m.AgentAddr, st.Epoch, prim.AgentAddr); err != nil {
				d.log.Info("failover: repoint failed; the replica follows by heartbeat", "node", m.ID, "err", err)
			}
		}()
	}
	wg.Wait()
}

// continuePromotion tells the primary of an automatic failover's term that
// has not opened writes yet to promote, at most once a second. A leader
// that took over in the middle of a failover gets here.
func (d *failoverDriver) continuePromotion(st consensus.State, now time.Time) {
	d.mu.Lock()
	if now.Sub(d.lastPromote) < time.Second {
		d.mu.Unlock()
		return
	}
	d.lastPromote = now
	d.mu.Unlock()
	e := st.EpochHistory[len(st.EpochHistory)-1]
	var expect uint64
	if e.Certificate != nil {
		expect = e.Certificate.PrimarySeqno
	}
	cand, _ := st.Member(st.Primary)
	d.log.Info("failover: telling the new primary to promote", "node", cand.ID, "epoch", st.Epoch, "expect_last_seqno", expect)
	ctx, cancel := d.context(promoteTimeout)
	_, err := d.agents.Promote(ctx, cand.AgentAddr, st.Epoch, expect)
	cancel()
	if err != nil {
		d.log.Warn("failover: Promote failed; asking again", "node", cand.ID, "epoch", st.Epoch, "err", err)
		return
	}
	d.mu.Lock()
	d.promoted = max(d.promoted, st.Epoch)
	d.mu.Unlock()
	msg := fmt.Sprintf("%s opened writes as primary of epoch %d (promotion continued by leader %s)", cand.ID, st.Epoch, d.s.id)
	d.record(consensus.DecisionNote, st.Epoch, cand.ID, msg, time.Now())
	d.setView(d.idleState(), msg, time.Now())
	var old string
	if n := len(st.EpochHistory); n >= 2 {
		old = st.EpochHistory[n-2].Primary
	}
	d.repoint(st, old)
}

// promotionPending reports whether the current term was started by an
// automatic failover (it carries a certificate) and its primary has not
// been seen writable.
func promotionPending(st consensus.State, pos map[string]Position, promoted uint64) bool {
	if st.Epoch == 0 || promoted >= st.Epoch {
		return false
	}
	e := st.EpochHistory[len(st.EpochHistory)-1]
	if !e.Automatic || e.Certificate == nil {
		return false
	}
	return !writable(pos[st.Primary], st.Epoch)
}

// writable reports whether a primary's report shows it serving writes in
// epoch.
func writable(p Position, epoch uint64) bool {
	return !p.Received.IsZero() && p.Role == manager.RolePrimary && p.Epoch == epoch && p.DatabaseHealthy && !p.ReadOnly
}

// askPrimary asks the primary's agent for its status.
func (d *failoverDriver) askPrimary(addr string) failover.PrimaryAnswer {
	ctx, cancel := d.context(askTimeout)
	defer cancel()
	st, err := d.agents.Status(ctx, addr)
	if err != nil {
		return failover.PrimaryAnswer{Err: err.Error()}
	}
	return failover.PrimaryAnswer{Answered: true, DatabaseHealthy: st.GetDatabaseHealthy(), RoleError: st.GetRoleError()}
}

// collect asks every member but the primary for its position, in
// parallel. It returns the answers and, in words, who did not answer.
func (d *failoverDriver) collect(st consensus.State) ([]failover.Answer, string) {
	type result struct {
		id  string
		st  *agentpb.AgentStatus
		err error
	}
	ctx, cancel := d.context(askTimeout)
	defer cancel()
	ch := make(chan result)
	n := 0
	for _, m := range st.Members {
		if m.ID == st.Primary {
			continue
		}
		n++
		go func() {
			s, err := d.agents.Status(ctx, m.AgentAddr)
			ch <- result{m.ID, s, err}
		}()
	}
	var answers []failover.Answer
	var missing []string
	for range n {
		r := <-ch
		if r.err != nil {
			missing = append(missing, fmt.Sprintf("%s (%v)", r.id, r.err))
			continue
		}
		if r.st.GetNodeId() != "" && r.st.GetNodeId() != r.id {
			missing = append(missing, fmt.Sprintf("%s (the agent at its address is %q)", r.id, r.st.GetNodeId()))
			continue
		}
		answers = append(answers, failover.Answer{ID: r.id,
			Last:    failover.LogPosition{Epoch: r.st.GetLastEpoch(), Seqno: r.st.GetLastSeqno()},
			Durable: r.st.GetDurableSeqno(), CommitIndex: r.st.GetCommitSeqno(), Role: r.st.GetRole(), Epoch: r.st.GetEpoch(),
			DatabaseHealthy: r.st.GetDatabaseHealthy()})
	}
	return answers, joinSorted(missing)
}

// detectInput builds failover.Detect's input from the state and the
// positions.
func detectInput(st consensus.State, pos map[string]Position, now, leaderSince time.Time) failover.DetectInput {
	in := failover.DetectInput{Now: now, Timeout: st.Settings.FailoverTimeout, Epoch: st.Epoch, Primary: st.Primary, LeaderSince: leaderSince}
	for _, m := range st.Members {
		p, ok := pos[m.ID]
		if !ok {
			continue
		}
		r := nodeReport(m.ID, p)
		if m.ID == st.Primary {
			in.PrimaryReport = r
		} else {
			in.Replicas = append(in.Replicas, r)
		}
	}
	return in
}

// joinSorted joins sorted copies of ss with ", ".
func joinSorted(ss []string) string {
	ss = slices.Clone(ss)
	slices.Sort(ss)
	return strings.Join(ss, ", ")
}

func nodeReport(id string, p Position) failover.NodeReport {
	return failover.NodeReport{ID: id, Received: p.Received, Role: string(p.Role), Epoch: p.Epoch,
		DatabaseHealthy: p.DatabaseHealthy, DatabaseGone: p.DatabaseGone, Error: p.Error,
		Streaming: p.PrimaryStream, StreamLost: p.StreamLost}
}
