package main

import (
	"context"
	"slices"
	"time"

	"github.com/quire-ha/quire/txlog"
)

// durableWatch records, for one agent's log, when each seqno after from
// became durable, measured from a common clock. It wakes at every change
// of the log (Changed) and reads DurableSeqno, so a time is when the
// watcher saw the seqno durable: at most one goroutine wake-up after the
// fsync. (bench/datapath measures the same way.)
type durableWatch struct {
	from uint64          // seqnos from+1 on are recorded
	at   []time.Duration // at[i] is the time seqno from+1+i became durable
	done chan struct{}
}

// watchDurable starts watching l until ctx is done.
func watchDurable(ctx context.Context, l *txlog.Log, clock time.Time) *durableWatch {
	w := &durableWatch{from: l.DurableSeqno(), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			// Take the channel before reading the position, so a change
			// between the two still wakes us.
			ch := l.Changed()
			d := l.DurableSeqno()
			if next := w.from + uint64(len(w.at)); d > next {
				now := time.Since(clock)
				for s := next; s < d; s++ {
					w.at = append(w.at, now)
				}
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	return w
}

// durableAt returns when seqno became durable, and false if the watch did
// not see it. Call it only after the watch ended.
func (w *durableWatch) durableAt(seqno uint64) (time.Duration, bool) {
	if seqno <= w.from || seqno > w.from+uint64(len(w.at)) {
		return 0, false
	}
	return w.at[seqno-w.from-1], true
}

// shipDelays returns, for every seqno from..to that the primary's watch
// and at least k replica watches saw, the time from the record being
// durable in the primary's log to it being durable in the k-th replica's
// log: the part of the ack gate's wait that shipping and the replicas'
// fsync take.
func shipDelays(primary *durableWatch, replicas []*durableWatch, k int, from, to uint64) []time.Duration {
	if k < 1 || k > len(replicas) {
		return nil
	}
	var out []time.Duration
	ts := make([]time.Duration, 0, len(replicas))
	for s := from; s <= to; s++ {
		p, ok := primary.durableAt(s)
		if !ok {
			continue
		}
		ts = ts[:0]
		for _, r := range replicas {
			if t, ok := r.durableAt(s); ok {
				ts = append(ts, t)
			}
		}
		if len(ts) < k {
			continue
		}
		slices.Sort(ts)
		out = append(out, ts[k-1]-p)
	}
	return out
}

// durations summarizes a set of durations.
type durations []time.Duration

// mean returns the mean, 0 for none.
func (d durations) mean() time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	return sum / time.Duration(len(d))
}

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100), 0 for
// none.
func (d durations) percentile(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(p/100*float64(len(s))+0.999999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}
