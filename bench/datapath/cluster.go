package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/config"
)

// node is one database host of the benchmark cluster: a mariadbd and the
// agent beside it, running in this process.
type node struct {
	name  string
	db    *server
	agent *agent.Agent
	dir   string // the agent's configuration and data
	done  chan struct{}
	err   error // Run's result, set before done is closed
}

// cluster is three nodes: db1's agent is the primary of epoch 1, db2's and
// db3's stream the log from it. In the baseline mode it is db1's mariadbd
// alone, without an agent.
type cluster struct {
	nodes  []*node
	cancel context.CancelFunc
}

// primarySettings are my.cnf lines for the primary (DESIGN.md §3), so the
// agent need not change them at start-up.
var primarySettings = []string{
	"rpl_semi_sync_master_enabled=ON",
	"rpl_semi_sync_master_wait_point=AFTER_SYNC",
	"rpl_semi_sync_master_wait_no_slave=ON",
	"rpl_semi_sync_master_timeout=4294967295",
}

// startCluster starts the three databases and agents under root. The
// primary's ack gate waits for k of the two replicas. On error everything
// started so far is stopped and removed.
func startCluster(ctx context.Context, root string, m mode, logger *slog.Logger) (c *cluster, err error) {
	names := []string{"db1", "db2", "db3"}
	if !m.agents {
		names = names[:1]
	}
	c = &cluster{}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.close())
			c = nil
		}
	}()
	servers := make([]*server, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		var extra []string
		switch {
		case i == 0 && m.agents:
			extra = primarySettings
		case i > 0:
			extra = []string{"read_only=ON"}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i], errs[i] = startServer(ctx, root, name, uint32(101+i), extra)
		}()
	}
	wg.Wait()
	for i, s := range servers {
		if s != nil {
			c.nodes = append(c.nodes, &node{name: names[i], db: s})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if !m.agents {
		return c, nil
	}

	actx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	primaryAddr := ""
	for i, n := range c.nodes {
		role := fmt.Sprintf("static:\n  role: primary\n  epoch: 1\nreplication:\n  k: %d\n  sync_set: [%s]\n  policy: strict\n",
			m.k, strings.Join(names[1:], ", "))
		if i > 0 {
			role = fmt.Sprintf("static:\n  role: replica\n  epoch: 1\n  primary_agent: %s\n", primaryAddr)
		}
		if err := n.startAgent(actx, root, role, logger.With("node", n.name)); err != nil {
			return c, err
		}
		if i == 0 {
			primaryAddr = n.agent.GRPCAddr()
			if err := n.waitFor(ctx, "the primary agent to serve", time.Minute, func(st agent.Status) bool { return st.Serving }); err != nil {
				return c, err
			}
		}
	}
	return c, nil
}

// startAgent writes the node's agent configuration, builds the agent and
// runs it until ctx is done.
func (n *node) startAgent(ctx context.Context, root, role string, logger *slog.Logger) error {
	dir, err := os.MkdirTemp(root, "agent-"+n.name+"-")
	if err != nil {
		return fmt.Errorf("agent %s: %w", n.name, err)
	}
	n.dir = dir
	pw := filepath.Join(dir, "mysql.password")
	if err := os.WriteFile(pw, []byte(n.db.password+"\n"), 0o600); err != nil {
		return fmt.Errorf("agent %s: %w", n.name, err)
	}
	yaml := fmt.Sprintf(`node_id: %s
listen: 127.0.0.1:0
http_listen: 127.0.0.1:0
data_dir: %s
mysql:
  host: 127.0.0.1
  port: %d
  user: %s
  password_file: %s
tls: {insecure_plaintext: true}
%s`, n.name, filepath.Join(dir, "data"), n.db.port, n.db.user, pw, role)
	cfg, err := config.ParseAgent([]byte(yaml), filepath.Join(dir, "agent.yaml"))
	if err != nil {
		return fmt.Errorf("agent %s: configuration: %w", n.name, err)
	}
	if n.agent, err = agent.New(cfg, logger); err != nil {
		return fmt.Errorf("agent %s: %w", n.name, err)
	}
	n.done = make(chan struct{})
	go func() {
		defer close(n.done)
		n.err = n.agent.Run(ctx)
	}()
	return nil
}

// check returns an error if the agent stopped or its role failed.
func (n *node) check() error {
	select {
	case <-n.done:
		return fmt.Errorf("agent %s stopped: %v", n.name, n.err)
	default:
	}
	if st := n.agent.Status(); st.RoleError != "" {
		return fmt.Errorf("agent %s: role %s failed: %s", n.name, st.Role.Kind, st.RoleError)
	}
	return nil
}

// waitFor polls the agent's status until cond holds, the agent fails, ctx
// is done or d passes.
func (n *node) waitFor(ctx context.Context, what string, d time.Duration, cond func(agent.Status) bool) error {
	deadline := time.Now().Add(d)
	for {
		if err := n.check(); err != nil {
			return err
		}
		if cond(n.agent.Status()) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent %s: timed out after %s waiting for %s", n.name, d, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond): // poll interval
		}
	}
}

// agents returns the nodes that run an agent, the primary first.
func (c *cluster) agents() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.agent != nil {
			out = append(out, n)
		}
	}
	return out
}

// waitDurable waits until every agent's log holds seqno durably.
func (c *cluster) waitDurable(ctx context.Context, seqno uint64, d time.Duration) error {
	for _, n := range c.agents() {
		l := n.agent.Log()
		if err := n.waitFor(ctx, fmt.Sprintf("seqno %d to be durable", seqno), d, func(agent.Status) bool { return l.DurableSeqno() >= seqno }); err != nil {
			return err
		}
	}
	return nil
}

// check returns the first failure of any agent.
func (c *cluster) check() error {
	for _, n := range c.agents() {
		if err := n.check(); err != nil {
			return err
		}
	}
	return nil
}

// close stops the agents, then the databases, and removes every directory.
func (c *cluster) close() error {
	if c.cancel != nil {
		c.cancel()
	}
	var errs []error
	for _, n := range c.nodes {
		if n.done != nil {
			<-n.done
			if n.err != nil {
				errs = append(errs, fmt.Errorf("agent %s: %w", n.name, n.err))
			}
		} else if n.agent != nil {
			errs = append(errs, n.agent.Close())
		}
	}
	for _, n := range c.nodes {
		errs = append(errs, n.db.remove())
		if n.dir != "" {
			if err := os.RemoveAll(n.dir); err != nil {
				errs = append(errs, fmt.Errorf("agent %s: %w", n.name, err))
			}
		}
	}
	return errors.Join(errs...)
}
