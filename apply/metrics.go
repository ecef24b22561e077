package apply

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	seqno      *prometheus.GaugeVec
	txs        *prometheus.CounterVec
	blocks     *prometheus.CounterVec
	serialized *prometheus.CounterVec
	retries    *prometheus.CounterVec
	stopped    *prometheus.GaugeVec
	waits      *prometheus.CounterVec
	skipped    prometheus.Counter
	blockSize  *prometheus.HistogramVec
	queue      *prometheus.GaugeVec
	// slotTimeouts counts partial blocks that waited BlockTime for a
	// partial-block slot and went without one.
	slotTimeouts *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		seqno: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "quire", Subsystem: "apply", Name: "seqno",
			Help: "Last seqno committed by the channel (its restart row).",
		}, []string{"channel"}),
		txs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "quire", Subsystem: "apply", Name: "transactions_total",
			Help: "Source transactions applied.",
		}, []string{"channel"}),
		blocks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "quire", Subsystem: "apply", Name: "blocks_total",
			Help: "Database transactions (blocks of source transactions) committed.",
		}, []string{"channel"}),
		serialized: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "quire", Subsystem: "apply", Name: "serialized_total",
			Help: "Records applied serialized, by reason.",
		}, []string{"reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "quire", Subsystem: "apply", Name: "retries_total",
			Help: "Blocks rolled back and retried (deadlock, lock wait timeout, error in a block).",
		}, []string{"channel"}),
		stopped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "quire", Subsystem: "apply", Name: "channel_stopped",
			Help: "1 while the channel is stopped on an apply error.",
		}, []string{"channel"}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "quire", Subsystem: "apply", Name: "scheduler_waits_total",
			Help: "Times the reader waited for commits before placing a record, by cause.",
		}, []string{"step"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "quire", Subsystem: "apply", Name: "operator_skips_total",
			Help: "Records skipped by an operator.",
		}),
		blockSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "quire", Subsystem: "apply", Name: "block_size_transactions",
			Help:    "Source transactions per committed block.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
		}, []string{"channel"}),
		queue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "quire", Subsystem: "apply", Name: "queue_depth",
			Help: "Records dispatched to the channel and not yet taken by it, as of its last commit.",
		}, []string{"channel"}),
		slotTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "quire", Subsystem: "apply", Name: "partial_block_slot_timeouts_total",
			Help: "Blocks that were not full, waited block_time for a partial-block slot and were applied without one.",
		}, []string{"channel"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.seqno, m.txs, m.blocks, m.serialized, m.retries, m.stopped, m.waits, m.skipped, m.blockSize, m.queue, m.slotTimeouts} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("apply: register metrics: %w", err)
		}
	}
	return m, nil
}

func channelLabel(ch int) string {
	if ch == SerialChannel {
		return "serial"
	}
	return strconv.Itoa(ch)
}
