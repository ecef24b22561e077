package apply

import (
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SupervisorStatus is a supervised applier as the agent's /status shows it
// (the "apply" object; `quire channels` prints it).
type SupervisorStatus struct {
	// Running: an applier run is under way (it may still have stopped
	// channels, see Errors).
	Running bool `json:"running"`
	// AppliedSeqno: every record up to it is applied to the database.
	AppliedSeqno uint64 `json:"applied_seqno"`
	// CommitSeqno is the commit index of the Run (on a replica, the one the
	// stream carried): the applier never applies beyond it.
	CommitSeqno uint64 `json:"commit_seqno"`
	// LagTransactions is CommitSeqno − AppliedSeqno.
	LagTransactions uint64 `json:"lag_transactions"`
	// LagSeconds is how long ago the oldest committed record not yet
	// applied committed on the source (whole seconds of source clock; the
	// nodes' clocks must agree). Absent when unknown.
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
	// Rate is the apply rate over the last ten seconds, in transactions
	// per second.
	Rate float64 `json:"rate_tx_per_s"`
	// Queued counts records waiting in channel queues; Inflight records
	// dispatched and not yet committed.
	Queued   int `json:"queued"`
	Inflight int `json:"inflight"`
	// Transactions, Blocks and Serialized count, since the Run started,
	// source transactions applied, database transactions committed by the
	// channels, and records applied serialized (alone).
	Transactions uint64 `json:"transactions"`
	Blocks       uint64 `json:"blocks"`
	Serialized   uint64 `json:"serialized"`
	// Runs counts applier starts since the Run started; more than one
	// means it was restarted after an error.
	Runs int `json:"runs"`
	// Channels lists every channel, the serial one (channel -1) last.
	Channels []SupervisedChannel `json:"channels"`
	// Errors lists the records channels are stopped on. Nothing is skipped:
	// the supervisor retries them with backoff, an operator fixes the data
	// or skips the record.
	Errors []StoppedRecord `json:"errors,omitempty"`
	// LastError is what ended the last applier run (or kept it from
	// starting), RetryAt when the supervisor tries again.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	RetryAt     time.Time `json:"retry_at,omitzero"`
	// Warnings name settings that work but are not recommended.
	Warnings []string `json:"warnings,omitempty"`
}

// SupervisedChannel is one applier channel.
type SupervisedChannel struct {
	// Channel is the channel number, -1 for the serial channel.
	Channel int `json:"channel"`
	// Shards the channel applied records of since the Run started (or
	// the channel count last changed).
	Shards []string `json:"shards,omitempty"`
	// Seqno and GTID are the channel's restart row.
	Seqno uint64 `json:"seqno"`
	GTID  string `json:"gtid,omitempty"`
	// LagTransactions counts committed seqnos the channel may still have
	// to apply: the commit index minus max(Seqno, the applied seqno) —
	// below the applied seqno every channel is done.
	LagTransactions uint64   `json:"lag_transactions"`
	LagSeconds      *float64 `json:"lag_seconds,omitempty"`
	Queued          int      `json:"queued"`
	// Transactions and Blocks are counted since the Run started;
	// AvgBlock is their ratio (transactions per database commit).
	Transactions uint64  `json:"transactions"`
	Blocks       uint64  `json:"blocks"`
	AvgBlock     float64 `json:"avg_block"`
	// Stopped is set while the channel is stopped on a record.
	Stopped *StoppedRecord `json:"stopped,omitempty"`
}

// StoppedRecord is a record a channel could not apply.
type StoppedRecord struct {
	Channel int      `json:"channel"`
	Seqno   uint64   `json:"seqno"`
	GTID    string   `json:"gtid"`
	Schemas []string `json:"schemas"`
	// Error is the SQL error.
	Error string `json:"error"`
	// Retries counts the supervisor's retries of the record so far.
	Retries int `json:"retries"`
}

// Status describes the applier of the Run under way, or returns nil when
// none is.
func (s *Supervisor) Status() *SupervisorStatus {
	s.mu.Lock()
	rc, ap := s.cur, s.ap
	s.mu.Unlock()
	if rc == nil {
		return nil
	}
	st := ap.Status()
	commit := rc.ci.Get()
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &SupervisorStatus{
		Running: st.Running, AppliedSeqno: st.Applied, CommitSeqno: commit, Inflight: st.Inflight,
		Runs: s.runs, Warnings: slices.Clone(s.warnings),
	}
	// Before the first run of this process, the restart rows read by
	// prepare are what is known.
	out.AppliedSeqno = max(out.AppliedSeqno, s.rowsMin)
	if s.lastErr != nil {
		out.LastError, out.LastErrorAt = s.lastErr.Error(), s.lastAt
		if !st.Running {
			out.RetryAt = s.retryAt
		}
	}
	lagFrom := func(pos uint64) (uint64, *float64) {
		if commit <= pos {
			return 0, new(float64)
		}
		if ts, ok := s.ts[pos+1]; ok && ts > 0 {
			sec := max(0, now.Sub(time.Unix(int64(ts), 0)).Seconds())
			return commit - pos, &sec
		}
		return commit - pos, nil
	}
	out.LagTransactions, out.LagSeconds = lagFrom(out.AppliedSeqno)
	if n := len(s.rate); n > 1 {
		a, b := s.rate[0], s.rate[n-1]
		if d := b.at.Sub(a.at).Seconds(); d > 0 && b.applied >= a.applied {
			out.Rate = float64(b.applied-a.applied) / d
		}
	}
	chans := st.Channels
	if st.Running || len(chans) > 0 {
		chans = append(slices.Clone(chans), st.Serial)
	}
	for _, c := range chans {
		// Ended runs are in base; a running one adds its own counts.
		t := s.base[c.Channel]
		if st.Running {
			t.txs += c.Transactions
			t.blocks += c.Blocks
		}
		ch := SupervisedChannel{
			Channel: c.Channel, Seqno: c.Seqno, GTID: c.GTID, Queued: c.Queued,
			Transactions: t.txs, Blocks: t.blocks,
		}
		if ch.Blocks > 0 {
			ch.AvgBlock = float64(ch.Transactions) / float64(ch.Blocks)
		}
		for shard := range s.shardsOn[c.Channel] {
			ch.Shards = append(ch.Shards, shard)
		}
		sort.Strings(ch.Shards)
		ch.LagTransactions, ch.LagSeconds = lagFrom(max(c.Seqno, out.AppliedSeqno))
		if e := c.Stopped; e != nil {
			re := &StoppedRecord{Channel: e.Channel, Seqno: e.Seqno, GTID: e.GTID, Schemas: e.Schemas, Error: e.Err.Error()}
			if r := s.retries[e.Seqno]; r != nil {
				re.Retries = r.n
			}
			ch.Stopped = re
			out.Errors = append(out.Errors, *re)
		}
		out.Queued += c.Queued
		out.Transactions += ch.Transactions
		if c.Channel == SerialChannel {
			out.Serialized += ch.Transactions
		} else {
			out.Blocks += ch.Blocks
		}
		out.Channels = append(out.Channels, ch)
	}
	return out
}

// lagCollector exports a supervised applier's per-channel lag at scrape
// time, from the same numbers Status shows: lag in committed transactions
// and in seconds of source commit time. Counters and the block size
// histogram come from the Applier itself.
type lagCollector struct {
	status func() *SupervisorStatus
	lagTx  *prometheus.Desc
	lagSec *prometheus.Desc
	queue  *prometheus.Desc
	commit *prometheus.Desc
}

func newLagCollector(status func() *SupervisorStatus) *lagCollector {
	return &lagCollector{
		status: status,
		lagTx: prometheus.NewDesc("quire_apply_channel_lag_transactions",
			"Committed transactions the channel may still have to apply (commit index minus its restart row).", []string{"channel"}, nil),
		lagSec: prometheus.NewDesc("quire_apply_channel_lag_seconds",
			"Age, in source commit time, of the oldest committed transaction the channel may still have to apply; 0 when caught up.", []string{"channel"}, nil),
		queue: prometheus.NewDesc("quire_apply_channel_queued",
			"Records dispatched to the channel and not yet applied.", []string{"channel"}, nil),
		commit: prometheus.NewDesc("quire_apply_commit_seqno",
			"Commit index received on the log stream: the applier applies up to it.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lagTx
	ch <- c.lagSec
	ch <- c.queue
	ch <- c.commit
}

// Collect implements prometheus.Collector.
func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	if st == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.commit, prometheus.GaugeValue, float64(st.CommitSeqno))
	for _, cs := range st.Channels {
		l := channelLabel(cs.Channel)
		ch <- prometheus.MustNewConstMetric(c.lagTx, prometheus.GaugeValue, float64(cs.LagTransactions), l)
		if cs.LagSeconds != nil {
			ch <- prometheus.MustNewConstMetric(c.lagSec, prometheus.GaugeValue, *cs.LagSeconds, l)
		}
		ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(cs.Queued), l)
	}
}
