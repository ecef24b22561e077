package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/quire-ha/quire/txlog"
)

// durableWatch records, for one log, when each seqno after from became
// durable, measured from the run's clock. It wakes at every change of the
// log (Changed) and reads DurableSeqno, so a time is when the watcher saw
// the seqno durable: at most one goroutine wake-up after the fsync.
type durableWatch struct {
	from  uint64          // seqnos from+1 on are recorded
	at    []time.Duration // at[i] is the time seqno from+1+i became durable
	stats txlog.Stats     // the log's counters when the watch began
	done  chan struct{}
}

// watchDurable starts watching l until ctx is done.
func watchDurable(ctx context.Context, l *txlog.Log, clock time.Time) *durableWatch {
	w := &durableWatch{from: l.DurableSeqno(), stats: l.Stats(), done: make(chan struct{})}
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

// distribution is a set of durations summarized by percentiles.
type distribution struct {
	sorted []time.Duration
}

func newDistribution(d []time.Duration) distribution {
	s := slices.Clone(d)
	slices.Sort(s)
	return distribution{sorted: s}
}

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100).
func (d distribution) percentile(p float64) time.Duration {
	if len(d.sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(d.sorted))+0.999999999) - 1
	return d.sorted[min(max(rank, 0), len(d.sorted)-1)]
}

func (d distribution) max() time.Duration {
	if len(d.sorted) == 0 {
		return 0
	}
	return d.sorted[len(d.sorted)-1]
}

// ms formats a duration in milliseconds with enough digits for
// sub-millisecond values.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch a := max(v, -v); {
	case a < 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a < 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
}

// logRecords reads the records from..to of l and returns each one's GTID
// sequence number and encoded size, checking that the GTIDs belong to
// serverID in domain 0.
func logRecords(l *txlog.Log, from, to uint64, serverID uint32) (gtids []uint64, bytes uint64, err error) {
	r, err := l.NewReader(from)
	if err != nil {
		return nil, 0, fmt.Errorf("read log from seqno %d: %w", from, err)
	}
	prefix := fmt.Sprintf("0-%d-", serverID)
	for s := from; s <= to; s++ {
		rec, ok, err := r.TryNext()
		if err != nil {
			return nil, 0, fmt.Errorf("read seqno %d: %w", s, err)
		}
		if !ok {
			return nil, 0, fmt.Errorf("the log ends before seqno %d", s)
		}
		if rec.Seqno != s {
			return nil, 0, fmt.Errorf("read seqno %d, want %d", rec.Seqno, s)
		}
		if !strings.HasPrefix(rec.GTID, prefix) {
			return nil, 0, fmt.Errorf("seqno %d has GTID %q, not of domain 0 and server %d", s, rec.GTID, serverID)
		}
		g, err := gtidSeq(rec.GTID)
		if err != nil {
			return nil, 0, fmt.Errorf("seqno %d: %w", s, err)
		}
		n, err := rec.EncodedSize()
		if err != nil {
			return nil, 0, fmt.Errorf("seqno %d: %w", s, err)
		}
		gtids = append(gtids, g)
		bytes += uint64(n)
	}
	return gtids, bytes, nil
}

// fsyncTotals are the transaction log's fsync histogram totals.
type fsyncTotals struct {
	seconds float64
	count   float64
}

// scrapeFsyncs reads an agent's quire_txlog_fsync_duration_seconds sum and
// count from its /metrics.
func scrapeFsyncs(ctx context.Context, httpAddr string) (fsyncTotals, error) {
	var t fsyncTotals
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return t, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return t, fmt.Errorf("scrape %s: %w", httpAddr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return t, fmt.Errorf("scrape %s: %s", httpAddr, resp.Status)
	}
	const name = "quire_txlog_fsync_duration_seconds"
	found := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		var dst *float64
		switch {
		case !ok:
			continue
		case k == name+"_sum":
			dst = &t.seconds
		case k == name+"_count":
			dst = &t.count
		default:
			continue
		}
		if *dst, err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
			return t, fmt.Errorf("scrape %s: %s: %w", httpAddr, k, err)
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return t, fmt.Errorf("scrape %s: %w", httpAddr, err)
	}
	if found != 2 {
		return t, fmt.Errorf("scrape %s: %s_sum and _count not found", httpAddr, name)
	}
	return t, nil
}
