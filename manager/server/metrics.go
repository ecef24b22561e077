package server

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

type metrics struct {
	heartbeats prometheus.Counter
	forwarded  *prometheus.CounterVec
	rpcs       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Server) (*metrics, error) {
	m := &metrics{
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quire_manager_heartbeats_total",
			Help: "Agent heartbeats this manager handled as leader.",
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quire_manager_forwarded_total",
			Help: "Calls this manager forwarded to the leader, by method.",
		}, []string{"method"}),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quire_manager_rpcs_total",
			Help: "Calls answered by this manager, by method and status code (see UnaryInterceptor).",
		}, []string{"method", "code"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	cs := []prometheus.Collector{
		m.heartbeats, m.forwarded, m.rpcs,
		gauge("quire_manager_raft_leader", "1 if this manager is the Raft leader, else 0.",
			func() float64 { return b(s.node.IsLeader()) }),
		gauge("quire_manager_raft_leader_known", "1 if this manager knows a Raft leader, else 0.",
			func() float64 { id, _ := s.node.Leader(); return b(id != "") }),
		gauge("quire_manager_raft_term", "The current Raft term.",
			func() float64 { return raftTerm(s.node) }),
		gauge("quire_manager_epoch", "The cluster's current epoch (primary term).",
			func() float64 { return float64(s.node.State().Epoch) }),
		gauge("quire_manager_k", "How many sync-set members must hold a commit.",
			func() float64 { return float64(s.node.State().K) }),
		gauge("quire_manager_members", "Database members of the cluster.",
			func() float64 { return float64(len(s.node.State().Members)) }),
		gauge("quire_manager_degraded", "1 while commits do not wait for k acknowledgements.",
			func() float64 { return b(s.node.State().Degraded != nil) }),
		gauge("quire_manager_recorded_commit_index", "The commit index last recorded in Raft.",
			func() float64 { return float64(s.node.State().CommitIndex) }),
		gauge("quire_manager_retain_from_seqno", "The retain-from floor sent to agents: they purge only log records below it; 0 purges nothing (leader only).",
			func() float64 {
				if !s.node.IsLeader() {
					return 0
				}
				return float64(s.retainFrom(s.node.State()))
			}),
		gauge("quire_manager_healthy_nodes", "Members whose heartbeat is fresh and whose database is healthy (leader only).",
			func() float64 { return float64(s.healthyNodes()) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("manager server: register metrics: %w", err)
		}
	}
	return m, nil
}

func (s *Server) healthyNodes() int {
	if !s.node.IsLeader() {
		return 0
	}
	timeout := s.node.State().Settings.FailoverTimeout
	now := time.Now()
	n := 0
	for _, p := range s.Positions() {
		if p.Reachable(now, timeout) && p.DatabaseHealthy {
			n++
		}
	}
	return n
}

// UnaryInterceptor counts calls by method and status code (when the server
// has a Registerer) and logs failed ones at debug level. Pass it to
// grpc.NewServer with grpc.UnaryInterceptor.
func (s *Server) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		code := status.Code(err)
		if s.met != nil {
			s.met.rpcs.WithLabelValues(info.FullMethod, code.String()).Inc()
		}
		if err != nil {
			s.logger.Debug("manager: call failed", "method", info.FullMethod, "code", code, "err", status.Convert(err).Message(), "peer", peerName(ctx))
		}
		return resp, err
	}
}
