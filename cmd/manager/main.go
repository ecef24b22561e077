// Command quire-manager runs one of the cluster's Raft managers: the
// replicated cluster state, and the ManagerService that agents and the
// quire CLI call.
//
//	quire-manager --config /etc/quire/manager.yaml [--bootstrap]
//
// With --bootstrap a manager whose data directory holds no Raft state
// bootstraps the cluster with the peers of its configuration; every manager
// of a new cluster may be started that way (the same peer list on each is
// safe). On a later start --bootstrap is a no-op, and a peer list that
// differs from the Raft configuration is logged as a warning. Without
// --bootstrap a new manager waits for a leader to add it.
//
// It serves gRPC on grpc_listen and HTTP on http_listen: /metrics
// (Prometheus), /healthz (200 while a leader is known) and /leader (the
// leader's ID and addresses as JSON). SIGTERM or SIGINT stops it cleanly.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/quire-ha/quire/authz"
	"github.com/quire-ha/quire/buildinfo"
	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/config"
	"github.com/quire-ha/quire/consensus"
	"github.com/quire-ha/quire/internal/rpcopts"
	"github.com/quire-ha/quire/manager/server"
)

// shutdownTimeout bounds the graceful part of a shutdown.
const shutdownTimeout = 5 * time.Second

// errUsage marks bad flags or configuration (exit status 2).
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "quire-manager:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// listening, if not nil, receives the addresses the manager serves on once
// it is up (tests).
type listening func(grpcAddr, httpAddr string)

// run runs the manager until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, up listening) error {
	fs := flag.NewFlagSet("quire-manager", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/quire/manager.yaml", "manager configuration file")
	bootstrap := fs.Bool("bootstrap", false, "bootstrap the cluster with the configured peers if the data directory holds no Raft state")
	check := fs.Bool("check", false, "check the configuration and exit")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%v: %w", err, errUsage)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: %w", fs.Arg(0), errUsage)
	}
	if *version {
		fmt.Fprintln(stdout, "quire-manager", buildinfo.String())
		return nil
	}
	cfg, err := config.LoadManager(*path)
	if err == nil {
		err = cfg.CheckPlaintext() // TLS off only on loopback
	}
	if err != nil {
		return fmt.Errorf("configuration %s:\n%v\n%w", *path, err, errUsage)
	}
	if *check {
		fmt.Fprintf(stdout, "%s: ok\n", *path)
		return nil
	}
	logger := cfg.Logger(stderr).With("manager", cfg.NodeID)
	return serve(ctx, cfg, *bootstrap, logger, up)
}

func serve(ctx context.Context, cfg *config.Manager, bootstrap bool, logger *slog.Logger, up listening) (err error) {
	var serverTLS, clientTLS, agentTLS *tls.Config
	revoked := certs.NewRevocationList() // follows the list in Raft once the node is open
	if !cfg.TLS.InsecurePlaintext {
		files := certs.Files{CA: cfg.TLS.CAFile, Cert: cfg.TLS.CertFile, Key: cfg.TLS.KeyFile}
		if serverTLS, err = certs.ServerConfig(files); err != nil {
			return err
		}
		if clientTLS, err = certs.ClientConfig(files, ""); err != nil {
			return err
		}
		// A manager dials only managers (Raft, forwarding), and Raft's
		// listener, which uses this configuration too, serves only them.
		certs.RequirePeer(clientTLS, certs.WantRole(certs.RoleManager))
		// Revoked certificates are refused in every handshake, Raft's too.
		certs.CheckRevoked(serverTLS, revoked)
		certs.CheckRevoked(clientTLS, revoked)
		// The leader's calls to the agents (failover) use their own
		// client configuration: the servers they reach are agents.
		if agentTLS, err = certs.ClientConfig(files, ""); err != nil {
			return err
		}
		certs.RequirePeer(agentTLS, certs.WantRole(certs.RoleAgent))
		certs.CheckRevoked(agentTLS, revoked)
	} else {
		logger.Error("TLS is OFF (tls.insecure_plaintext: true): callers are not authenticated and every call is allowed; loopback tests only")
	}

	var self config.Peer
	peers := make([]server.Peer, 0, len(cfg.Peers))
	raftPeers := make([]consensus.Peer, 0, len(cfg.Peers))
	peerIDs := make([]string, 0, len(cfg.Peers))
	for _, p := range cfg.Peers {
		peerIDs = append(peerIDs, p.ID)
		if p.ID == cfg.NodeID {
			self = p
		}
		peers = append(peers, server.Peer{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr})
		raftPeers = append(raftPeers, consensus.Peer{ID: p.ID, Addr: p.RaftAddr})
	}

	node, err := consensus.Open(consensus.Config{
		ID:            cfg.NodeID,
		DataDir:       cfg.DataDir,
		BindAddr:      cfg.RaftListen,
		AdvertiseAddr: self.RaftAddr,
		TLS:           clientTLS,
		PeerIDs:       peerIDs,
		Logger:        logger,
	})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := node.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	rctx, stopRevocations := context.WithCancel(ctx)
	defer stopRevocations()
	go server.FollowRevocations(rctx, node, revoked, logger)
	if bootstrap {
		switch err := node.Bootstrap(raftPeers); {
		case errors.Is(err, consensus.ErrBootstrapConflict):
			logger.Warn("bootstrap skipped: the Raft configuration differs from the configured peers; "+
				"change managers with the leader's add/remove operations, not the peer list", "err", err)
		case err != nil:
			return err
		}
	} else if conf, err := node.Configuration(); err == nil && len(conf) == 0 {
		logger.Info("no Raft state and no --bootstrap: waiting for a leader to add this manager")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "quire_manager_build_info", Help: "Always 1; the version label names the build."}, []string{"version"})
	buildInfo.WithLabelValues(buildinfo.String()).Set(1)
	reg.MustRegister(buildInfo)
	plaintext := prometheus.NewGauge(prometheus.GaugeOpts{Name: "quire_tls_plaintext",
		Help: "1 when this process runs without TLS (tls.insecure_plaintext: allowed on loopback only); then nobody is authenticated."})
	if cfg.TLS.InsecurePlaintext {
		plaintext.Set(1)
	}
	reg.MustRegister(plaintext)

	srv, err := server.New(server.Config{
		Node: node, Peers: peers, TLS: clientTLS, Insecure: cfg.TLS.InsecurePlaintext, Logger: logger, Registerer: reg,
		InitSettings: &consensus.Settings{FailoverTimeout: cfg.Failover.Timeout, AntiFlapWindow: cfg.Failover.AntiFlapWindow},
		AutoFailover: cfg.Failover.Auto, AgentTLS: agentTLS,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	// Every method has a rule (package authz); calls a follower forwards
	// are judged by the caller the follower vouches for.
	az, err := authz.New(authz.Config{Plaintext: cfg.TLS.InsecurePlaintext, Forwarders: peerIDs, Logger: logger, Registerer: reg, Revoked: revoked})
	if err != nil {
		return err
	}
	opts := []grpc.ServerOption{grpc.UnaryInterceptor(srv.UnaryInterceptor())}
	opts = append(opts, az.ServerOptions()...)
	if serverTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(serverTLS)))
	}
	opts = append(opts, rpcopts.Server()...)
	g := grpc.NewServer(opts...)
	srv.Register(g)
	if err := az.Verify(g); err != nil {
		return err
	}
	gln, err := net.Listen("tcp", cfg.GRPCListen)
	if err != nil {
		return fmt.Errorf("listen grpc_listen %s: %w", cfg.GRPCListen, err)
	}
	hln, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		gln.Close()
		return fmt.Errorf("listen http_listen %s: %w", cfg.HTTPListen, err)
	}
	hs := &http.Server{Handler: httpHandler(node, peers, reg), ReadHeaderTimeout: 10 * time.Second}

	errs := make(chan error, 2)
	go func() { errs <- g.Serve(gln) }()
	go func() {
		if err := hs.Serve(hln); !errors.Is(err, http.ErrServerClosed) {
			errs <- err
			return
		}
		errs <- nil
	}()
	logger.Info("manager serving", "version", buildinfo.String(), "grpc", gln.Addr().String(), "http", hln.Addr().String(),
		"raft", node.Addr(), "tls", serverTLS != nil)
	if up != nil {
		up(gln.Addr().String(), hln.Addr().String())
	}

	select {
	case <-ctx.Done():
		logger.Info("manager stopping")
	case err = <-errs:
		err = fmt.Errorf("serve: %w", err)
		logger.Error("manager stopping", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-sctx.Done():
		g.Stop()
	}
	if herr := hs.Shutdown(sctx); herr != nil {
		hs.Close()
	}
	logger.Info("manager stopped")
	return err
}

// httpHandler serves /metrics, /healthz and /leader.
func httpHandler(node *consensus.Node, peers []server.Peer, reg *prometheus.Registry) http.Handler {
	grpcAddr := func(id string) string {
		for _, p := range peers {
			if p.ID == id {
				return p.GRPCAddr
			}
		}
		return ""
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		id, _ := node.Leader()
		if id == "" {
			http.Error(w, "no leader known", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok leader=%s\n", id)
	})
	mux.HandleFunc("GET /leader", func(w http.ResponseWriter, r *http.Request) {
		id, addr := node.Leader()
		if id == "" {
			http.Error(w, "no leader known", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(struct {
			ID       string `json:"id"`
			RaftAddr string `json:"raft_addr"`
			GRPCAddr string `json:"grpc_addr"`
			Self     bool   `json:"self"`
		}{id, addr, grpcAddr(id), id == node.ID()})
	})
	return mux
}
