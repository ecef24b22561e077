package ship

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics measures the primary's log streams. Make one with NewMetrics and
// pass it in ServerConfig.Metrics.
type Metrics struct {
	ackRTT *prometheus.HistogramVec
}

// NewMetrics creates the log streams' metrics and registers them on reg
// (nil: not registered).
//
//	quire_ship_replica_ack_seconds{replica}  a batch sent to the replica → its durable report covering it
//
// The ack time is what a replica adds to a commit's wait: the network both
// ways plus the replica's append and fsync. It is the counterpart of
// MariaDB's Rpl_semi_sync_master_net_avg_wait_time, with an fsync in it.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		ackRTT: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "quire", Subsystem: "ship", Name: "replica_ack_seconds",
			Help:    "Time from sending a batch of records to a replica to the replica reporting it durable (network both ways, the replica's append and fsync).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"replica"}),
	}
	if reg != nil {
		if err := reg.Register(m.ackRTT); err != nil {
			return nil, fmt.Errorf("ship: register metrics: %w", err)
		}
	}
	return m, nil
}

// maxInFlight bounds the batches a stream remembers for the ack metric; a
// replica that stops acknowledging cannot grow it without bound. Batches
// sent while it is full are not timed.
const maxInFlight = 4096

// sentBatch is one batch on its way: its last seqno and when it was sent.
type sentBatch struct {
	last uint64
	at   time.Time
}

// inFlight is what a stream sent and the replica has not yet reported
// durable: the highest seqno sent, which bounds the acks a replica may
// send, and the batches awaiting an ack, for the ack metric.
type inFlight struct {
	mu      sync.Mutex
	n       uint64
	batches []sentBatch
}

// start sets the highest seqno the replica already holds.
func (f *inFlight) start(n uint64) { f.mu.Lock(); f.n = n; f.mu.Unlock() }

// sent records a batch ending at last, sent at.
func (f *inFlight) sent(last uint64, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n = last
	if len(f.batches) < maxInFlight {
		f.batches = append(f.batches, sentBatch{last: last, at: at})
	}
}

// max returns the highest seqno sent.
func (f *inFlight) max() uint64 { f.mu.Lock(); defer f.mu.Unlock(); return f.n }

// acked forgets the batches a durable report up to seqno covers and
// returns how long each took, oldest first.
func (f *inFlight) acked(seqno uint64, now time.Time) []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := 0
	for i < len(f.batches) && f.batches[i].last <= seqno {
		i++
	}
	if i == 0 {
		return nil
	}
	d := make([]time.Duration, i)
	for j := range d {
		d[j] = now.Sub(f.batches[j].at)
	}
	f.batches = append(f.batches[:0], f.batches[i:]...)
	return d
}
