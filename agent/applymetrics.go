package agent

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// applyCollector exports a replica's per-channel lag at scrape time, from
// the same numbers `quire channels` and /status show: lag in committed
// transactions and in seconds of source commit time. Counters and the block
// size histogram come from package apply itself.
type applyCollector struct {
	status func() *ApplyStatus
	lagTx  *prometheus.Desc
	lagSec *prometheus.Desc
	queue  *prometheus.Desc
	commit *prometheus.Desc
}

func newApplyCollector(status func() *ApplyStatus) *applyCollector {
	return &applyCollector{
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
func (c *applyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lagTx
	ch <- c.lagSec
	ch <- c.queue
	ch <- c.commit
}

// Collect implements prometheus.Collector.
func (c *applyCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	if st == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.commit, prometheus.GaugeValue, float64(st.CommitSeqno))
	for _, cs := range st.Channels {
		l := "serial"
		if cs.Channel >= 0 {
			l = strconv.Itoa(cs.Channel)
		}
		ch <- prometheus.MustNewConstMetric(c.lagTx, prometheus.GaugeValue, float64(cs.LagTransactions), l)
		if cs.LagSeconds != nil {
			ch <- prometheus.MustNewConstMetric(c.lagSec, prometheus.GaugeValue, *cs.LagSeconds, l)
		}
		ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(cs.Queued), l)
	}
}
