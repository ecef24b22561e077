package binlog

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the binlog reader does. Make one with NewMetrics and
// share it between the Dumpers and Sources of a process (Config.Metrics).
type Metrics struct {
	events        prometheus.Counter
	transactions  prometheus.Counter
	bytes         prometheus.Counter
	reconnects    prometheus.Counter
	dropped       prometheus.Counter
	acks          prometheus.Counter
	lastEventTime prometheus.Gauge
	connected     prometheus.Gauge
}

// NewMetrics creates the reader's metrics and registers them on reg
// (nil: not registered).
//
//	quire_binlog_events_read_total            events read (heartbeats excluded)
//	quire_binlog_transactions_read_total      transactions numbered and returned
//	quire_binlog_bytes_read_total             event bytes read (heartbeats included)
//	quire_binlog_reconnects_total             dumps restarted after a failure
//	quire_binlog_transactions_reread_total    transactions read again after a restart and dropped
//	quire_binlog_acks_sent_total              semi-sync replies sent
//	quire_binlog_last_event_timestamp_seconds header timestamp of the last event read
//	quire_binlog_connected                    1 while a dump is running
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "quire", Subsystem: "binlog", Name: name, Help: help})
	}
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "quire", Subsystem: "binlog", Name: name, Help: help})
	}
	m := &Metrics{
		events:        c("events_read_total", "Binlog events read from the source, heartbeats excluded."),
		transactions:  c("transactions_read_total", "Transactions numbered and returned by the reader."),
		bytes:         c("bytes_read_total", "Binlog event bytes read from the source, heartbeats included."),
		reconnects:    c("reconnects_total", "Binlog dumps restarted after a failure or a silent link."),
		dropped:       c("transactions_reread_total", "Transactions read again after a dump restart and dropped because they were already numbered."),
		acks:          c("acks_sent_total", "Semi-sync replies sent to the source."),
		lastEventTime: g("last_event_timestamp_seconds", "Header timestamp (Unix seconds) of the last binlog event read."),
		connected:     g("connected", "1 while a binlog dump is running, else 0."),
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{m.events, m.transactions, m.bytes, m.reconnects, m.dropped, m.acks, m.lastEventTime, m.connected} {
			if err := reg.Register(col); err != nil {
				return nil, fmt.Errorf("binlog: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
