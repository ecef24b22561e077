package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// faultKind is what a fault does.
type faultKind int

const (
	killAgent faultKind = iota
	killMariadbd
	killManager
	stopAgent // SIGSTOP of a replica's agent, SIGCONT after the hold time
)

func (k faultKind) String() string {
	switch k {
	case killAgent:
		return "kill -9 agent"
	case killMariadbd:
		return "kill -9 mariadbd"
	case killManager:
		return "kill -9 manager"
	case stopAgent:
		return "SIGSTOP agent"
	}
	return fmt.Sprintf("fault(%d)", int(k))
}

// plannedFault is one fault of the schedule.
type plannedFault struct {
	Kind faultKind
	// Target is the node (db1…) or manager (m1…); empty for stopAgent,
	// whose replica is chosen when the fault runs (the replicas are known
	// only then), as the Pick-th of them.
	Target string
	Pick   int
	// At is when the fault starts, from the start of the faults; a fault
	// never starts before the previous one has ended.
	At time.Duration
	// Hold is the restart delay of a killed process (what a service
	// manager waits) or how long a stopped agent stays stopped.
	Hold time.Duration
}

// Restart delays and stop lengths, as the issue gives them.
const (
	minRestartDelay = 200 * time.Millisecond
	maxRestartDelay = 3 * time.Second
	minStop         = 1 * time.Second
	maxStop         = 8 * time.Second
)

// allKinds are the fault kinds in the order -kinds names them.
var allKinds = []faultKind{killAgent, killMariadbd, killManager, stopAgent}

// kindNames are the names -kinds takes.
var kindNames = map[string]faultKind{"agent": killAgent, "mariadbd": killMariadbd, "manager": killManager, "stop": stopAgent}

// parseKinds reads -kinds: comma-separated names of kindNames.
func parseKinds(s string) ([]faultKind, error) {
	var kinds []faultKind
	for _, name := range strings.Split(s, ",") {
		k, ok := kindNames[strings.TrimSpace(name)]
		if !ok {
			return nil, fmt.Errorf("-kinds: unknown fault kind %q (want agent, mariadbd, manager, stop)", name)
		}
		if !slices.Contains(kinds, k) {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds)
	return kinds, nil
}

// planFaults returns n faults of the given kinds spread over span, the
// same for the same seed. The first of them, in random order, cover every
// target once: kill -9 of each agent, each mariadbd and each manager, and
// one stop of a replica agent (of the kinds given); the rest are random,
// each kind as likely, then each target as likely.
func planFaults(seed uint64, n int, span time.Duration, kinds []faultKind, nodes, managers []string) []plannedFault {
	rng := rand.New(rand.NewPCG(seed, 0x6368616f73)) // "chaos"
	var cover []plannedFault
	for _, k := range kinds {
		switch k {
		case killAgent, killMariadbd:
			for _, id := range nodes {
				cover = append(cover, plannedFault{Kind: k, Target: id})
			}
		case killManager:
			for _, id := range managers {
				cover = append(cover, plannedFault{Kind: k, Target: id})
			}
		case stopAgent:
			cover = append(cover, plannedFault{Kind: stopAgent})
		}
	}
	rng.Shuffle(len(cover), func(i, j int) { cover[i], cover[j] = cover[j], cover[i] })
	faults := make([]plannedFault, 0, n)
	for i := range n {
		var f plannedFault
		if i < len(cover) {
			f = cover[i]
		} else {
			f.Kind = kinds[rng.IntN(len(kinds))]
			switch f.Kind {
			case killAgent, killMariadbd:
				f.Target = nodes[rng.IntN(len(nodes))]
			case killManager:
				f.Target = managers[rng.IntN(len(managers))]
			}
		}
		f.Pick = rng.IntN(1 << 20)
		if f.Kind == stopAgent {
			f.Hold = uniform(rng, minStop, maxStop)
		} else {
			f.Hold = uniform(rng, minRestartDelay, maxRestartDelay)
		}
		// Evenly spaced, each shifted by up to half a slot.
		slot := span / time.Duration(max(n, 1))
		f.At = time.Duration(i)*slot + time.Duration(rng.Int64N(int64(slot/2)+1))
		faults = append(faults, f)
	}
	return faults
}

func uniform(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// pickReplica chooses the pick-th replica (in ID order) of a status; with
// no usable status, the pick-th node other than the last known primary.
func pickReplica(st *clusterStatus, nodes []string, pick int) string {
	var cands []string
	if st != nil {
		for _, n := range st.Nodes {
			if n.Role == "replica" {
				cands = append(cands, n.ID)
			}
		}
	}
	if len(cands) == 0 {
		primary := "db1"
		if st != nil && st.Primary != "" {
			primary = st.Primary
		}
		for _, id := range nodes {
			if id != primary {
				cands = append(cands, id)
			}
		}
	}
	if len(cands) == 0 {
		return ""
	}
	slices.Sort(cands)
	return cands[pick%len(cands)]
}

// faultRecord is what happened to one fault.
type faultRecord struct {
	N      int
	Kind   faultKind
	Target string
	// Role is what the target was when the fault started: primary or
	// replica for nodes, leader or follower for managers, "?" if the
	// status did not say.
	Role       string
	Pid        int
	Start, End time.Duration // since the start of the run
	Hold       time.Duration
	// Restart is how long the restart command took (kills only).
	Restart time.Duration
	Err     string
	// Stall is the longest gap between acknowledged writes blamed on this
	// fault (see stalls; filled in at the end).
	Stall time.Duration
}

// label is the fault's row in the table: kind and the target's role.
func (r faultRecord) label() string { return fmt.Sprintf("%s (%s)", r.Kind, r.Role) }

// procLocks serializes what the fault runner and the exit watcher do to
// one process.
type procLocks struct {
	mu sync.Mutex
	m  map[proc]*sync.Mutex
}

func (l *procLocks) get(p proc) *sync.Mutex {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[proc]*sync.Mutex{}
	}
	if l.m[p] == nil {
		l.m[p] = &sync.Mutex{}
	}
	return l.m[p]
}

// roleOf says what a target is in status st.
func roleOf(st *clusterStatus, kind faultKind, target string) string {
	if st == nil {
		return "?"
	}
	if kind == killManager {
		if st.Leader == target {
			return "leader"
		}
		return "follower"
	}
	for _, n := range st.Nodes {
		if n.ID == target {
			return n.Role
		}
	}
	return "?"
}

// runFault carries out one fault and returns its record.
func (h *harness) runFault(ctx context.Context, n int, f plannedFault) (rec faultRecord) {
	st := h.c.lastStatus()
	target := f.Target
	if f.Kind == stopAgent {
		target = pickReplica(st, h.nodeIDs(), f.Pick)
	}
	rec = faultRecord{N: n, Kind: f.Kind, Target: target, Role: roleOf(st, f.Kind, target), Hold: f.Hold, Start: h.since()}
	defer func() { rec.End = h.since() }()
	var p proc
	switch f.Kind {
	case killAgent, stopAgent:
		p = proc{"agent", target}
	case killMariadbd:
		p = proc{"mysqld", target}
	case killManager:
		p = proc{"manager", target}
	}
	lk := h.locks.get(p)
	lk.Lock()
	defer lk.Unlock()
	pid, ok := h.c.pid(p)
	if !ok {
		rec.Err = p.String() + " was not running before the fault; started it"
		if err := h.c.start(ctx, p); err != nil {
			rec.Err += ": " + err.Error()
		}
		return rec
	}
	rec.Pid = pid
	if f.Kind == stopAgent {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			rec.Err = fmt.Sprintf("SIGSTOP %s (pid %d): %v", p, pid, err)
			return rec
		}
		sleepCtx(ctx, f.Hold) // SIGCONT also after Ctrl-C
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			rec.Err = fmt.Sprintf("SIGCONT %s (pid %d): %v", p, pid, err)
		}
		return rec
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		rec.Err = fmt.Sprintf("SIGKILL %s (pid %d): %v", p, pid, err)
		return rec
	}
	if err := waitGone(ctx, pid, 10*time.Second); err != nil {
		rec.Err = err.Error()
		return rec
	}
	if sleepCtx(ctx, f.Hold) != nil {
		return rec
	}
	t0 := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := h.c.start(rctx, p); err != nil {
		rec.Err = fmt.Sprintf("restart %s: %v", p, err)
	}
	rec.Restart = time.Since(t0)
	return rec
}

// unplannedExit is a process that stopped running without a fault.
type unplannedExit struct {
	At      time.Duration
	Proc    proc
	PidFile string // what its pid file said
	Tail    string // its log's last lines before the restart
	Err     string // the restart's error, if any
}

// watchExits restarts, as a service manager would, any process that
// exits without a fault (after a random 0.2-3 s), and records it.
func (h *harness) watchExits(ctx context.Context, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x77617463)) // "watc"
	for {
		if sleepCtx(ctx, 500*time.Millisecond) != nil {
			return
		}
		for _, p := range h.c.procs() {
			lk := h.locks.get(p)
			if !lk.TryLock() {
				continue // a fault has it
			}
			if _, ok := h.c.pid(p); ok {
				lk.Unlock()
				continue
			}
			ex := unplannedExit{At: h.since(), Proc: p, PidFile: h.c.pidFileContent(p)}
			h.printf("%s %s is not running (pid file: %s) and no fault stopped it; restarting it\n", stamp(ex.At), p, ex.PidFile)
			if sleepCtx(ctx, uniform(rng, minRestartDelay, maxRestartDelay)) == nil {
				// After the delay: what a dying process wrote is in its log.
				ex.Tail, _ = tailFile(h.c.logFile(p), 12)
				rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
				if err := h.c.start(rctx, p); err != nil {
					ex.Err = err.Error()
					h.printf("%s  restart of %s failed: %v\n", stamp(h.since()), p, err)
				}
				cancel()
			}
			lk.Unlock()
			h.mu.Lock()
			h.exits = append(h.exits, ex)
			h.mu.Unlock()
		}
	}
}

// kindList is the -kinds value for kinds.
func kindList(kinds []faultKind) string {
	var names []string
	for _, k := range kinds {
		for name, kk := range kindNames {
			if kk == k {
				names = append(names, name)
			}
		}
	}
	return strings.Join(names, ",")
}
