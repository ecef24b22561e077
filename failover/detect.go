package failover

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Detection: is the primary failed? (DESIGN.md §6, docs/failover.md)
//
// The manager leader calls [Detect] with what it knows — the primary's
// last heartbeat, every replica's last heartbeat, the time — and the
// [Watch] the previous call returned. Detect is pure: the caller keeps
// the Watch between calls, as etcd's raft keeps its state machine and its
// caller drives it.
//
// The primary is failed when
//
//   - its agent has been silent (no heartbeat) for longer than the
//     failover timeout, and the replicas confirm: at least one reachable
//     replica of the current epoch has lost its stream from the primary,
//     and none still streams from it (a replica that still streams proves
//     the primary's agent alive: the leader is cut off from it, not the
//     replicas);
//   - or its agent answers but has reported its database unhealthy (or its
//     role failing) continuously for the failover timeout: the agent is
//     the witness of its own database;
//   - or, at once (the fast path), its agent reports that its database is
//     gone: nothing listens at the database's address any more (the
//     process exited; connections are refused). A dead database does not
//     wait out a long timeout.
//
// An agent outage shorter than the timeout on a live database is not a
// failure: its next heartbeat resets the watch.

// NodeReport is one agent's last heartbeat as the leader holds it.
type NodeReport struct {
	ID string
	// Received is when the leader received it (its own clock); zero if the
	// leader has heard nothing from this agent since it became leader.
	Received time.Time
	// Role is what the agent is ("primary", "replica", "none"); Epoch the
	// newest epoch it knows.
	Role  string
	Epoch uint64
	// DatabaseHealthy: the agent's database answered its probe.
	DatabaseHealthy bool
	// DatabaseGone: the probe found nothing listening at the database's
	// address (connection refused, no socket): the server process is gone.
	DatabaseGone bool
	// Error is what the agent says is wrong, empty if nothing.
	Error string
	// Streaming (replicas): the agent holds a live log stream from the
	// primary of its epoch.
	Streaming bool
	// StreamLost (replicas): how long the agent had been without such a
	// stream when it sent the report; 0 while Streaming.
	StreamLost time.Duration
}

// DetectInput is what one detection step decides on.
type DetectInput struct {
	Now time.Time
	// Timeout is the failover timeout (the cluster's setting).
	Timeout time.Duration
	// Epoch and Primary are the current term and its primary; no
	// detection happens while Epoch is 0.
	Epoch   uint64
	Primary string
	// LeaderSince is when this manager became leader: it holds no
	// heartbeat older than that, so silence counts from it at the earliest.
	LeaderSince time.Time
	// PrimaryReport is the primary's last heartbeat (Received zero: none).
	PrimaryReport NodeReport
	// Replicas are the other members' last heartbeats (those never heard
	// from may be left out or have Received zero).
	Replicas []NodeReport
}

// Watch is the detection state the caller keeps between steps: when the
// current bad period of the primary of (Epoch, Primary) began.
type Watch struct {
	Epoch   uint64
	Primary string
	// Since is when the leader first saw the primary's agent report its
	// database unhealthy or its role failing in the current period; zero
	// while the last report was good.
	Since time.Time
}

// Verdict is the outcome of a detection step.
type Verdict int

// The verdicts.
const (
	// Healthy: nothing to do.
	Healthy Verdict = iota
	// Suspect: something is wrong, but the timeout has not passed or the
	// replicas do not confirm; Reason says which.
	Suspect
	// Failed: fail over.
	Failed
)

func (v Verdict) String() string {
	switch v {
	case Healthy:
		return "healthy"
	case Suspect:
		return "suspect"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Kind says what is wrong with the primary.
type Kind string

// The kinds of failure.
const (
	// KindNone: nothing is wrong.
	KindNone Kind = ""
	// KindSilent: no heartbeat from the primary's agent.
	KindSilent Kind = "silent"
	// KindUnhealthy: the primary's agent reports its database unhealthy or
	// its role failing.
	KindUnhealthy Kind = "unhealthy"
	// KindDatabaseGone: the primary's agent reports its database gone.
	KindDatabaseGone Kind = "database-gone"
)

// Detection is the outcome of [Detect].
type Detection struct {
	Verdict Verdict
	Kind    Kind
	// Fast: failed by the fast path, without waiting for the timeout.
	Fast bool
	// Since is when the bad period began (the primary's last heartbeat for
	// KindSilent); BadFor how long it has lasted at Now.
	Since  time.Time
	BadFor time.Duration
	// Confirmed lists the reachable replicas of the current epoch that lost
	// their stream from the primary; Streaming those that still stream
	// from it. Both sorted.
	Confirmed []string
	Streaming []string
	// Reason says what was seen, in words for logs, `quire status` and the
	// decision log.
	Reason string
}

// Key is a stable summary of d (no times or durations), for recording a
// decision only when it changes.
func (d Detection) Key() string {
	return fmt.Sprintf("%s/%s/%t/confirmed=%s/streaming=%s", d.Verdict, d.Kind, d.Fast,
		strings.Join(d.Confirmed, ","), strings.Join(d.Streaming, ","))
}

// Detect takes one detection step. It returns the Watch to pass to the next
// step and the verdict. It is pure.
func Detect(w Watch, in DetectInput) (Watch, Detection) {
	if in.Epoch == 0 || in.Primary == "" {
		return Watch{}, Detection{Verdict: Healthy, Reason: "no primary yet"}
	}
	if w.Epoch != in.Epoch || w.Primary != in.Primary {
		w = Watch{Epoch: in.Epoch, Primary: in.Primary}
	}
	p := in.PrimaryReport
	timeout := in.Timeout
	// Silence counts from the last heartbeat, or from when this manager
	// became leader if it has none (it forgot older ones).
	heard := p.Received
	if heard.IsZero() || heard.Before(in.LeaderSince) {
		heard = maxTime(heard, in.LeaderSince)
	}
	silentFor := in.Now.Sub(heard)
	reachable := !p.Received.IsZero() && silentFor <= timeout

	if reachable {
		bad, why := primaryReportBad(p)
		if !bad {
			return Watch{Epoch: in.Epoch, Primary: in.Primary}, Detection{Verdict: Healthy, Reason: fmt.Sprintf("primary %s is healthy", in.Primary)}
		}
		if w.Since.IsZero() {
			w.Since = p.Received
		}
		d := Detection{Kind: KindUnhealthy, Since: w.Since, BadFor: in.Now.Sub(w.Since)}
		if p.DatabaseGone {
			d.Kind, d.Verdict, d.Fast = KindDatabaseGone, Failed, true
			d.Reason = fmt.Sprintf("primary %s: its agent reports the database gone (%s): failing over without waiting for the timeout", in.Primary, why)
			return w, d
		}
		if d.BadFor >= timeout {
			d.Verdict = Failed
			d.Reason = fmt.Sprintf("primary %s: its agent has reported %s for %s (failover timeout %s)", in.Primary, why, round(d.BadFor), timeout)
			return w, d
		}
		d.Verdict = Suspect
		d.Reason = fmt.Sprintf("primary %s: its agent reports %s, for %s so far (failover after %s)", in.Primary, why, round(d.BadFor), timeout)
		return w, d
	}

	if silentFor <= timeout {
		// No heartbeat since this manager became leader, but not for long:
		// it forgot the older ones.
		return w, Detection{Verdict: Suspect, Kind: KindSilent, Since: heard, BadFor: silentFor,
			Reason: fmt.Sprintf("no heartbeat from primary %s's agent yet since this manager became leader %s ago (failover timeout %s)", in.Primary, round(silentFor), timeout)}
	}
	// Silent for longer than the timeout. An unhealthy period that led into
	// the silence counts from its start.
	since := heard
	if !w.Since.IsZero() && w.Since.Before(since) {
		since = w.Since
	}
	d := Detection{Kind: KindSilent, Since: since, BadFor: in.Now.Sub(since)}
	for _, r := range in.Replicas {
		if r.ID == in.Primary || r.Received.IsZero() || in.Now.Sub(r.Received) > timeout {
			continue // unreachable replicas confirm nothing
		}
		if r.Epoch != in.Epoch || r.Role != "replica" {
			continue // not (yet) a replica of this term: its stream says nothing about this primary
		}
		if r.Streaming {
			d.Streaming = append(d.Streaming, r.ID)
		} else {
			d.Confirmed = append(d.Confirmed, r.ID)
		}
	}
	slices.Sort(d.Confirmed)
	slices.Sort(d.Streaming)
	silence := fmt.Sprintf("no heartbeat from primary %s's agent for %s (failover timeout %s)", in.Primary, round(silentFor), timeout)
	if p.Received.IsZero() {
		silence = fmt.Sprintf("no heartbeat from primary %s's agent since this manager became leader %s ago (failover timeout %s)", in.Primary, round(silentFor), timeout)
	}
	switch {
	case len(d.Streaming) > 0:
		d.Verdict = Suspect
		d.Reason = fmt.Sprintf("%s, but %s still stream(s) from it: this manager may be cut off from the primary; not failing over", silence, strings.Join(d.Streaming, ", "))
	case len(d.Confirmed) == 0:
		d.Verdict = Suspect
		d.Reason = fmt.Sprintf("%s, but no reachable replica of epoch %d confirms that it lost its stream; not failing over", silence, in.Epoch)
	default:
		d.Verdict = Failed
		d.Reason = fmt.Sprintf("%s; replicas %s lost their streams too", silence, strings.Join(d.Confirmed, ", "))
	}
	return w, d
}

// primaryReportBad reports whether the primary's report shows a failure,
// and which, in words.
func primaryReportBad(p NodeReport) (bool, string) {
	var parts []string
	if p.DatabaseGone {
		parts = append(parts, "nothing listens at its database's address")
	} else if !p.DatabaseHealthy {
		parts = append(parts, "its database unhealthy")
	}
	if p.Error != "" {
		parts = append(parts, "error: "+truncateText(p.Error, 200))
	}
	if len(parts) == 0 {
		return false, ""
	}
	return true, strings.Join(parts, "; ")
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// PrimaryAnswer is the failed primary's agent's answer when the leader asks
// it again (its Status) before acting on a Failed detection.
type PrimaryAnswer struct {
	// Answered is false when the agent did not answer (Err says why).
	Answered bool
	Err      string
	// DatabaseHealthy: the agent's database answered it just now.
	DatabaseHealthy bool
	// RoleError is the agent's role error, if any.
	RoleError string
}

// Confirm decides whether a Failed detection stands once the leader has
// asked the primary's agent again: an agent that answers with a healthy
// database and no role error refutes it (its heartbeats, or its last
// report, were behind). An agent that does not answer confirms it. It
// returns whether the failure is confirmed, and why, in words.
func Confirm(d Detection, a PrimaryAnswer) (bool, string) {
	if d.Verdict != Failed {
		return false, "nothing to confirm: the primary is not failed"
	}
	switch {
	case !a.Answered:
		return true, "the primary's agent does not answer the leader either (" + truncateText(a.Err, 200) + ")"
	case a.DatabaseHealthy && a.RoleError == "":
		return false, "the primary's agent answers the leader and reports its database healthy and its role running: not failing over"
	case !a.DatabaseHealthy:
		return true, "the primary's agent confirms that its database does not answer"
	default:
		return true, "the primary's agent confirms that its role fails: " + truncateText(a.RoleError, 200)
	}
}
