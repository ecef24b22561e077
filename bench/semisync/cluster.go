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

// mode is one replication set-up to measure. Every mode has the same three
// mariadbd (db1 the primary, db2 and db3 read-only replicas) with the same
// fsync settings; they differ in who replicates and who sends db1 the
// semi-sync ACK that lets COMMIT return.
type mode struct {
	name  string // A, B, C, D, or one of the extra modes
	title string
	// native: db2 and db3 replicate with MariaDB's own replication.
	native bool
	// semiSync: db1 waits (AFTER_SYNC) for a semi-sync ACK. In native
	// modes the replicas' IO threads send it; in Quire modes db1's agent.
	semiSync bool
	// ioOnly: native replicas run only the IO thread (receive, write the
	// relay log, ACK) and apply nothing.
	ioOnly bool
	// parallel: native replicas apply with 8 parallel worker threads
	// (slave_parallel_mode=optimistic), as Quire's 8 channels do.
	parallel bool
	// syncRelay: native replicas fsync the relay log for every event
	// (sync_relay_log=1) before they ACK, as Quire's replicas fsync their
	// log before they report a record durable.
	syncRelay bool
	// quire: db1's agent extracts the binlog and gates the ACK on k of the
	// sync set {db2, db3}; db2's and db3's agents stream and fsync the log.
	quire bool
	k     int
}

// modes are the modes -modes may name, in the order -modes defaults to.
var modes = []mode{
	{name: "A", title: "async (native)", native: true},
	{name: "B", title: "native semi-sync", native: true, semiSync: true},
	{name: "C", title: "Quire K=1", quire: true, semiSync: true, k: 1},
	{name: "D", title: "Quire K=2", quire: true, semiSync: true, k: 2},
	{name: "B-io", title: "native semi-sync, replicas do not apply", native: true, semiSync: true, ioOnly: true},
	{name: "B-fsync", title: "native semi-sync, sync_relay_log=1", native: true, semiSync: true, syncRelay: true},
	{name: "B-par", title: "native semi-sync, 8 parallel apply threads", native: true, semiSync: true, parallel: true},
}

const defaultModes = "A,B,C,D"

// baseline is the mode the summary's ratios compare with.
const baseline = "B"

// parseModes reads -modes: comma-separated mode names, each at most once.
func parseModes(s string) ([]mode, error) {
	var out []mode
	seen := map[string]bool{}
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var found bool
		for _, m := range modes {
			if strings.EqualFold(m.name, f) {
				if seen[m.name] {
					return nil, fmt.Errorf("mode %s is listed twice", m.name)
				}
				seen[m.name] = true
				out, found = append(out, m), true
				break
			}
		}
		if !found {
			var names []string
			for _, m := range modes {
				names = append(names, m.name)
			}
			return nil, fmt.Errorf("unknown mode %q (want some of %s)", f, strings.Join(names, ", "))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no mode given")
	}
	return out, nil
}

// semiSyncPrimary are db1's my.cnf lines in every semi-sync mode, native
// or Quire: DESIGN.md §3's settings. The long timeout keeps MariaDB from
// falling back to asynchronous replication silently; the benchmark checks
// that no commit went unacknowledged (Rpl_semi_sync_master_no_tx).
var semiSyncPrimary = []string{
	"rpl_semi_sync_master_enabled=ON",
	"rpl_semi_sync_master_wait_point=AFTER_SYNC",
	"rpl_semi_sync_master_wait_no_slave=ON",
	"rpl_semi_sync_master_timeout=4294967295",
}

// settings returns the my.cnf lines of node i (0 is the primary) in m.
func (m mode) settings(i int) []string {
	if i == 0 {
		if m.semiSync {
			return semiSyncPrimary
		}
		return nil
	}
	out := []string{"read_only=ON"}
	if m.native && m.semiSync {
		out = append(out, "rpl_semi_sync_slave_enabled=ON")
	}
	if m.syncRelay {
		out = append(out, "sync_relay_log=1", "sync_master_info=1")
	}
	if m.parallel {
		out = append(out, "slave_parallel_threads=8", "slave_parallel_mode=optimistic")
	}
	return out
}

// node is one database host of the benchmark cluster: a mariadbd and, in
// Quire modes, the agent beside it, running in this process.
type node struct {
	name  string
	db    *server
	agent *agent.Agent
	dir   string // the agent's configuration and data
	done  chan struct{}
	err   error // Run's result, set before done is closed
}

// cluster is the three nodes of one run.
type cluster struct {
	mode   mode
	nodes  []*node
	cancel context.CancelFunc
}

func (c *cluster) primary() *server { return c.nodes[0].db }

// startCluster starts the three databases under root and connects them as
// m says: native replication (CHANGE MASTER … MASTER_USE_GTID=slave_pos)
// or Quire agents. On error everything started so far is stopped and
// removed.
func startCluster(ctx context.Context, root string, m mode, logger *slog.Logger) (c *cluster, err error) {
	names := []string{"db1", "db2", "db3"}
	c = &cluster{mode: m}
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
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i], errs[i] = startServer(ctx, root, name, uint32(101+i), m.settings(i))
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
	if m.native {
		return c, c.startNative(ctx)
	}
	return c, c.startAgents(ctx, root, logger)
}

// startNative points db2 and db3 at db1 with MariaDB's replication and
// waits until db1 sees them (as semi-sync clients in semi-sync modes).
func (c *cluster) startNative(ctx context.Context) error {
	p := c.primary()
	start := "START SLAVE"
	if c.mode.ioOnly {
		start = "START SLAVE IO_THREAD"
	}
	for _, n := range c.nodes[1:] {
		if err := n.db.exec(ctx,
			fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='%s', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos",
				p.port, p.user, p.password),
			start,
		); err != nil {
			return err
		}
	}
	return poll(ctx, "db1 to see both replicas", time.Minute, func() (bool, error) {
		if c.mode.semiSync {
			st, err := p.status(ctx, "Rpl_semi_sync_master_clients")
			if err != nil {
				return false, err
			}
			return st["Rpl_semi_sync_master_clients"] == 2, nil
		}
		for _, n := range c.nodes[1:] {
			ss, err := n.db.row(ctx, "SHOW SLAVE STATUS")
			if err != nil {
				return false, err
			}
			if e := ss["Last_IO_Error"]; e != "" {
				return false, fmt.Errorf("mariadbd %s: replication: %s", n.name, e)
			}
			if ss["Slave_IO_Running"] != "Yes" {
				return false, nil
			}
		}
		return true, nil
	})
}

// replicaApply is the -replica-apply flag: the replicas' apply settings.
var replicaApply string

// startAgents starts db1's agent as the primary of epoch 1 with the ack
// gate waiting for K of {db2, db3}, then db2's and db3's agents streaming
// from it, and waits until the gate counts both replicas.
func (c *cluster) startAgents(ctx context.Context, root string, logger *slog.Logger) error {
	actx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	primaryAddr := ""
	for i, n := range c.nodes {
		role := fmt.Sprintf("static:\n  role: primary\n  epoch: 1\nreplication:\n  k: %d\n  sync_set: [db2, db3]\n  policy: strict\n", c.mode.k)
		if i > 0 {
			role = fmt.Sprintf("static:\n  role: replica\n  epoch: 1\n  primary_agent: %s\n", primaryAddr)
			if replicaApply != "" {
				role += "apply: " + replicaApply + "\n"
			}
		}
		if err := n.startAgent(actx, root, role, logger.With("node", n.name)); err != nil {
			return err
		}
		if i == 0 {
			primaryAddr = n.agent.GRPCAddr()
			if err := n.waitFor(ctx, "the primary agent to serve", time.Minute, func(st agent.Status) bool { return st.Serving }); err != nil {
				return err
			}
		}
	}
	return c.nodes[0].waitFor(ctx, "the ack gate to count db2 and db3", time.Minute, func(st agent.Status) bool {
		if st.Gate == nil {
			return false
		}
		counted := 0
		for _, r := range st.Gate.Replicas {
			if r.Counted {
				counted++
			}
		}
		return counted == 2
	})
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

// check returns an error if the node's agent stopped or its role failed.
func (n *node) check() error {
	if n.agent == nil {
		return nil
	}
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
	return poll(ctx, fmt.Sprintf("agent %s: %s", n.name, what), d, func() (bool, error) {
		if err := n.check(); err != nil {
			return false, err
		}
		return cond(n.agent.Status()), nil
	})
}

// poll calls cond every 20 ms until it returns true or an error, ctx is
// done or d passes.
func poll(ctx context.Context, what string, d time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond): // poll interval
		}
	}
}

// check returns the first failure of any agent or native replica.
func (c *cluster) check(ctx context.Context) error {
	for _, n := range c.nodes {
		if err := n.check(); err != nil {
			return err
		}
	}
	if !c.mode.native {
		return nil
	}
	for _, n := range c.nodes[1:] {
		ss, err := n.db.row(ctx, "SHOW SLAVE STATUS")
		if err != nil {
			return err
		}
		if ss["Slave_IO_Running"] != "Yes" {
			return fmt.Errorf("mariadbd %s: replication IO thread is %q: %s", n.name, ss["Slave_IO_Running"], ss["Last_IO_Error"])
		}
		if !c.mode.ioOnly && ss["Slave_SQL_Running"] != "Yes" {
			return fmt.Errorf("mariadbd %s: replication SQL thread is %q: %s", n.name, ss["Slave_SQL_Running"], ss["Last_SQL_Error"])
		}
	}
	return nil
}

// waitReplicated waits until both replicas hold the primary's first seq
// transactions: native replicas have applied them (or, IO thread only,
// received them); Quire's agents have them durable in their logs, db1's
// ack gate has acknowledged them and the replica agents have applied them.
func (c *cluster) waitReplicated(ctx context.Context, seq uint64, d time.Duration) error {
	if c.mode.native {
		for _, n := range c.nodes[1:] {
			verb := "apply"
			if c.mode.ioOnly {
				verb = "receive"
			}
			what := fmt.Sprintf("mariadbd %s to %s GTID 0-%d-%d", n.name, verb, c.primary().serverID, seq)
			if err := poll(ctx, what, d, func() (bool, error) {
				got, err := n.replicated(ctx, c.mode.ioOnly)
				return got >= seq, err
			}); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range c.nodes {
		l := n.agent.Log()
		if err := n.waitFor(ctx, fmt.Sprintf("seqno %d to be durable", seq), d, func(agent.Status) bool { return l.DurableSeqno() >= seq }); err != nil {
			return err
		}
	}
	if err := c.nodes[0].waitFor(ctx, fmt.Sprintf("the commit index to reach %d", seq), d, func(st agent.Status) bool { return st.CommitSeqno >= seq }); err != nil {
		return err
	}
	for _, n := range c.nodes[1:] {
		if err := n.waitFor(ctx, fmt.Sprintf("seqno %d to be applied", seq), d, func(st agent.Status) bool { return applied(st) >= seq }); err != nil {
			return err
		}
	}
	return nil
}

// applied returns the seqno a replica agent has applied up to.
func applied(st agent.Status) uint64 {
	if st.Apply == nil {
		return 0
	}
	return st.Apply.AppliedSeqno
}

// replicated returns the sequence number (domain 0) of the last
// transaction a native replica applied or, received true, received.
func (n *node) replicated(ctx context.Context, received bool) (uint64, error) {
	if !received {
		return n.db.gtidSeq(ctx, "SELECT @@gtid_slave_pos")
	}
	ss, err := n.db.row(ctx, "SHOW SLAVE STATUS")
	if err != nil {
		return 0, err
	}
	seq, err := parseGTIDPos(ss["Gtid_IO_Pos"])
	if err != nil {
		return 0, fmt.Errorf("mariadbd %s: SHOW SLAVE STATUS Gtid_IO_Pos: %w", n.name, err)
	}
	return seq, nil
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
			if n.err != nil && !errors.Is(n.err, context.Canceled) {
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
