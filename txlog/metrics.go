package txlog

import "github.com/prometheus/client_golang/prometheus"

// metrics are the log's Prometheus collectors.
type metrics struct {
	reg          prometheus.Registerer
	collectors   []prometheus.Collector
	fsyncSeconds prometheus.Histogram
}

func newMetrics(l *Log, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		fsyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "quire_txlog_fsync_duration_seconds",
			Help:    "Time spent in fsync of transaction log segment files.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	m.collectors = []prometheus.Collector{
		m.fsyncSeconds,
		counter("quire_txlog_appended_records_total", "Records appended to the transaction log since it was opened.",
			func() float64 { return float64(l.nRecords.Load()) }),
		counter("quire_txlog_appended_bytes_total", "Encoded bytes appended to the transaction log since it was opened.",
			func() float64 { return float64(l.nBytes.Load()) }),
		counter("quire_txlog_fsyncs_total", "fsync calls on transaction log segment files since the log was opened.",
			func() float64 { return float64(l.nFsyncs.Load()) }),
		gauge("quire_txlog_first_seqno", "Seqno of the first record held in the transaction log.",
			func() float64 { return float64(l.FirstSeqno()) }),
		gauge("quire_txlog_last_seqno", "Seqno of the last record appended to the transaction log.",
			func() float64 { return float64(l.LastSeqno()) }),
		gauge("quire_txlog_durable_seqno", "Highest transaction log seqno known to be on stable storage.",
			func() float64 { return float64(l.DurableSeqno()) }),
		gauge("quire_txlog_segments", "Number of transaction log segment files.",
			func() float64 {
				_, n := l.Size()
				return float64(n)
			}),
		gauge("quire_txlog_bytes", "Bytes of records held in the transaction log's segment files.",
			func() float64 {
				b, _ := l.Size()
				return float64(b)
			}),
		counter("quire_txlog_purged_segments_total", "Segment files removed by retention since the log was opened.",
			func() float64 { return float64(l.nPurgedSegs.Load()) }),
		counter("quire_txlog_purged_bytes_total", "Bytes of segment files removed by retention since the log was opened.",
			func() float64 { return float64(l.nPurgedBytes.Load()) }),
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			return nil, err
		}
	}
	return m, nil
}

// unregister removes the collectors, so the log can be opened again with the
// same registerer.
func (m *metrics) unregister() {
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
