package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/manager"
)

// The cluster commands talk to any manager through manager.Client.

// clusterFlags are the flags every cluster command takes.
type clusterFlags struct {
	config   string
	managers string
	ca       string
	cert     string
	key      string
	insecure bool
	json     bool
	timeout  time.Duration
}

func addClusterFlags(fs *flag.FlagSet) *clusterFlags {
	f := &clusterFlags{}
	fs.StringVar(&f.config, "config", "", "CLI configuration file (env QUIRE_CONFIG; default ~/.config/quire/cli.yaml)")
	fs.StringVar(&f.managers, "managers", os.Getenv("QUIRE_MANAGERS"), "comma-separated gRPC addresses of the managers (env QUIRE_MANAGERS)")
	fs.StringVar(&f.ca, "tls-ca", os.Getenv("QUIRE_TLS_CA"), "CA certificate (env QUIRE_TLS_CA)")
	fs.StringVar(&f.cert, "tls-cert", os.Getenv("QUIRE_TLS_CERT"), "client certificate (env QUIRE_TLS_CERT)")
	fs.StringVar(&f.key, "tls-key", os.Getenv("QUIRE_TLS_KEY"), "client key (env QUIRE_TLS_KEY)")
	fs.BoolVar(&f.insecure, "insecure", false, "plaintext gRPC (managers with tls.insecure_plaintext)")
	fs.BoolVar(&f.json, "json", false, "print JSON")
	fs.DurationVar(&f.timeout, "timeout", 15*time.Second, "give up after this long without an answer")
	return f
}

// parseArgs parses flags that may come before, between or after the
// positional arguments, and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%s: %v: %w", fs.Name(), err, errUsage)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// positional parses args and checks that exactly n positional arguments
// (named by what) were given.
func positional(fs *flag.FlagSet, args []string, what ...string) ([]string, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != len(what) {
		if len(what) == 0 {
			return nil, fmt.Errorf("%s: unexpected argument %q: %w", fs.Name(), pos[0], errUsage)
		}
		return nil, fmt.Errorf("%s: want %s, got %d arguments: %w", fs.Name(), strings.Join(what, " "), len(pos), errUsage)
	}
	return pos, nil
}

// connect returns a client of the managers and a context bounded by
// --timeout.
func (f *clusterFlags) connect(name string) (*manager.Client, context.Context, context.CancelFunc, error) {
	if err := f.applyConfig(); err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	var addrs []string
	for _, a := range strings.Split(f.managers, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, nil, nil, fmt.Errorf("%s: no managers: give --managers host:port,..., set QUIRE_MANAGERS, or name them in a CLI configuration (--config, QUIRE_CONFIG or ~/.config/quire/cli.yaml): %w", name, errUsage)
	}
	if f.timeout <= 0 {
		return nil, nil, nil, fmt.Errorf("%s: --timeout %s is not positive: %w", name, f.timeout, errUsage)
	}
	cfg := manager.ClientConfig{Addrs: addrs, Insecure: f.insecure, RetryTimeout: f.timeout}
	switch {
	case f.insecure && (f.ca != "" || f.cert != "" || f.key != ""):
		return nil, nil, nil, fmt.Errorf("%s: --insecure together with --tls-* files; choose one: %w", name, errUsage)
	case !f.insecure && (f.ca == "" || f.cert == "" || f.key == ""):
		return nil, nil, nil, fmt.Errorf("%s: give --tls-ca, --tls-cert and --tls-key (or QUIRE_TLS_CA, QUIRE_TLS_CERT, QUIRE_TLS_KEY), or --insecure: %w", name, errUsage)
	case !f.insecure:
		tc, err := certs.ClientConfig(certs.Files{CA: f.ca, Cert: f.cert, Key: f.key}, "")
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		certs.RequirePeer(tc, certs.WantRole(certs.RoleManager)) // only managers answer cluster commands
		cfg.TLS = tc
	}
	cl, err := manager.NewClient(cfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %v: %w", name, err, errUsage)
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	return cl, ctx, func() { cancel(); cl.Close() }, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// runStatus implements `quire status`.
func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	f := addClusterFlags(fs)
	watch := fs.Duration("watch", 0, "print the status again every D (e.g. 1s) until interrupted; errors are printed and retried")
	if _, err := positional(fs, args); err != nil {
		return err
	}
	if *watch < 0 || (*watch > 0 && *watch < 100*time.Millisecond) {
		return fmt.Errorf("status: --watch %s: want at least 100ms: %w", *watch, errUsage)
	}
	cl, ctx, done, err := f.connect("status")
	if err != nil {
		return err
	}
	defer done()
	if *watch == 0 {
		return printStatusOnce(ctx, cl, f.json, stdout)
	}
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for {
		if !f.json {
			fmt.Fprintf(stdout, "--- %s\n", time.Now().Format(time.RFC3339))
		}
		rctx, cancel := context.WithTimeout(sig, f.timeout)
		err := printStatusOnce(rctx, cl, f.json, stdout)
		cancel()
		if sig.Err() != nil {
			return nil
		}
		if err != nil {
			fmt.Fprintln(stdout, "status:", err)
		}
		select {
		case <-sig.Done():
			return nil
		case <-time.After(*watch):
		}
	}
}

// printStatusOnce asks the managers once and prints the answer.
func printStatusOnce(ctx context.Context, cl *manager.Client, asJSON bool, w io.Writer) error {
	st, err := cl.Status(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(w, st)
	}
	return printStatus(w, st, time.Now())
}

// printStatus prints the header line and the node table.
func printStatus(w io.Writer, st manager.Status, now time.Time) error {
	degraded := "no"
	if d := st.Degraded; d != nil {
		degraded = fmt.Sprintf("since seqno %d (%s)", d.AsyncSince, d.Reason)
	}
	primary := st.Primary
	if primary == "" {
		primary = "none (run quire init --primary ID)"
	}
	fmt.Fprintf(w, "epoch %d  primary %s  k %d  policy %s  degraded %s  commit seqno %d  leader %s (%s)\n",
		st.Epoch, primary, st.K, st.Policy, degraded, st.CommitSeqno, st.Leader, st.LeaderAddr)
	if f := st.LastFailover; f != nil && !f.Acknowledged {
		fmt.Fprintf(w, "last automatic failover %s: epoch %d, %s -> %s (%s); not acknowledged (quire ack-failover)\n",
			f.At.Format(time.RFC3339), f.Epoch, f.From, f.To, f.Reason)
	}
	if len(st.Nodes) == 0 {
		fmt.Fprintln(w, "no members (add them with quire members add)")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tEPOCH\tHEALTHY\tDURABLE\tAPPLIED\tLAG(TX)\tLAG(S)\tSYNC\tHEARTBEAT")
	var problems []string
	for _, n := range st.Nodes {
		heard := !n.LastHeartbeat.IsZero()
		ago := "never"
		if heard {
			ago = fmt.Sprintf("%.1fs ago", max(0, now.Sub(n.LastHeartbeat).Seconds()))
		}
		applied := ifHeard(heard, strconv.FormatUint(n.AppliedSeqno, 10))
		if n.Role == manager.RolePrimary && n.AppliedSeqno == 0 {
			applied = "-" // the primary applies nothing
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, n.Role,
			ifHeard(heard, strconv.FormatUint(n.Epoch, 10)), yesNo(n.Healthy),
			ifHeard(heard, strconv.FormatUint(n.DurableSeqno, 10)), applied,
			optUint(n.LagTx), optSeconds(n.LagSeconds), yesNo(n.InSyncSet), ago)
		switch {
		case n.Error != "":
			problems = append(problems, fmt.Sprintf("%s: %s", n.ID, n.Error))
		case heard && !n.Reachable:
			problems = append(problems, fmt.Sprintf("%s: no heartbeat for longer than the failover timeout %s", n.ID, st.FailoverTimeout))
		case heard && !n.DatabaseHealthy:
			problems = append(problems, fmt.Sprintf("%s: database unhealthy", n.ID))
		case heard && n.ReportedRole != n.Role:
			problems = append(problems, fmt.Sprintf("%s: reports role %s, assigned %s", n.ID, n.ReportedRole, n.Role))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if f := st.Failover; f != nil && f.State != "healthy" && f.State != "off" {
		since := ""
		if !f.Since.IsZero() {
			since = fmt.Sprintf(" (for %.1fs)", max(0, now.Sub(f.Since).Seconds()))
		}
		problems = append(problems, fmt.Sprintf("failover: %s%s: %s", f.State, since, f.Reason))
	}
	for _, p := range problems {
		fmt.Fprintln(w, p)
	}
	return nil
}

func ifHeard(heard bool, s string) string {
	if !heard {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func optUint(v *uint64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatUint(*v, 10)
}

func optSeconds(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v, 'f', 1, 64)
}

// printState prints the state after a change: summary line, or JSON.
func printState(w io.Writer, asJSON bool, st manager.ClusterState, summary string) error {
	if asJSON {
		return printJSON(w, st)
	}
	_, err := fmt.Fprintln(w, summary)
	return err
}

func listOrNone(ids []string) string {
	if len(ids) == 0 {
		return "(empty)"
	}
	return strings.Join(ids, ",")
}

// runSetK implements `quire set-k N`.
func runSetK(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("set-k", stderr)
	f := addClusterFlags(fs)
	pos, err := positional(fs, args, "N")
	if err != nil {
		return err
	}
	k, err := strconv.Atoi(pos[0])
	if err != nil {
		return fmt.Errorf("set-k: %q is not a number: %w", pos[0], errUsage)
	}
	cl, ctx, done, err := f.connect("set-k")
	if err != nil {
		return err
	}
	defer done()
	st, err := cl.SetK(ctx, k)
	if err != nil {
		return err
	}
	return printState(stdout, f.json, st, fmt.Sprintf("k is %d (sync set %s, policy %s)", st.K, listOrNone(st.SyncSet), st.Policy))
}

// runSetPolicy implements `quire set-policy strict|degrade`.
func runSetPolicy(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("set-policy", stderr)
	f := addClusterFlags(fs)
	pos, err := positional(fs, args, "strict|degrade")
	if err != nil {
		return err
	}
	cl, ctx, done, err := f.connect("set-policy")
	if err != nil {
		return err
	}
	defer done()
	st, err := cl.SetPolicy(ctx, pos[0])
	if err != nil {
		return err
	}
	return printState(stdout, f.json, st, "policy is "+st.Policy)
}

// runSetSyncSet implements `quire set-sync-set ID,...`.
func runSetSyncSet(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("set-sync-set", stderr)
	f := addClusterFlags(fs)
	pos, err := positional(fs, args, "ID,...")
	if err != nil {
		return err
	}
	ids := splitIDs(pos[0])
	cl, ctx, done, err := f.connect("set-sync-set")
	if err != nil {
		return err
	}
	defer done()
	st, err := cl.SetSyncSet(ctx, ids)
	if err != nil {
		return err
	}
	return printState(stdout, f.json, st, fmt.Sprintf("sync set is %s (k %d)", listOrNone(st.SyncSet), st.K))
}

// splitIDs splits a comma-separated list; "" is the empty list. Empty
// elements are kept so that the managers name them.
func splitIDs(s string) []string {
	if strings.TrimSpace(s) == "" {
		return []string{}
	}
	ids := strings.Split(s, ",")
	for i := range ids {
		ids[i] = strings.TrimSpace(ids[i])
	}
	return ids
}

// runSetSettings implements `quire set-settings`.
func runSetSettings(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("set-settings", stderr)
	f := addClusterFlags(fs)
	timeout := fs.Duration("failover-timeout", 0, "how long the primary must be failed before automatic failover")
	window := fs.Duration("anti-flap-window", 0, "no second automatic failover inside this window without an acknowledgement (0s: off)")
	if _, err := positional(fs, args); err != nil {
		return err
	}
	var s manager.Settings
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "failover-timeout":
			s.FailoverTimeout = timeout
		case "anti-flap-window":
			s.AntiFlapWindow = window
		}
	})
	if s.FailoverTimeout == nil && s.AntiFlapWindow == nil {
		return fmt.Errorf("set-settings: give --failover-timeout and/or --anti-flap-window: %w", errUsage)
	}
	cl, ctx, done, err := f.connect("set-settings")
	if err != nil {
		return err
	}
	defer done()
	st, err := cl.SetSettings(ctx, s)
	if err != nil {
		return err
	}
	return printState(stdout, f.json, st, fmt.Sprintf("failover timeout %s, anti-flap window %s", st.FailoverTimeout, st.AntiFlapWindow))
}

// runInit implements `quire init --primary ID`.
func runInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("init", stderr)
	f := addClusterFlags(fs)
	primary := fs.String("primary", "", "member id of the first primary")
	syncSet := fs.String("sync-set", "", "comma-separated sync set of epoch 1 (default: keep the current one)")
	if _, err := positional(fs, args); err != nil {
		return err
	}
	if *primary == "" {
		return fmt.Errorf("init: --primary is required: %w", errUsage)
	}
	var set []string
	if *syncSet != "" {
		set = splitIDs(*syncSet)
	}
	cl, ctx, done, err := f.connect("init")
	if err != nil {
		return err
	}
	defer done()
	st, err := cl.InitCluster(ctx, *primary, set)
	if err != nil {
		return err
	}
	return printState(stdout, f.json, st, fmt.Sprintf("epoch %d: primary %s, sync set %s, k %d", st.Epoch, st.Primary, listOrNone(st.SyncSet), st.K))
}

// runAckFailover implements `quire ack-failover`.
func runAckFailover(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ack-failover", stderr)
	f := addClusterFlags(fs)
	by := fs.String("by", "", "who acknowledges (default: the name on the client certificate)")
	if _, err := positional(fs, args); err != nil {
		return err
	}
	cl, ctx, done, err := f.connect("ack-failover")
	if err != nil {
		return err
	}
	defer done()
	st, err := cl.AcknowledgeFailover(ctx, *by)
	if err != nil {
		return err
	}
	summary := "acknowledged"
	if lf := st.LastFailover; lf != nil {
		summary = fmt.Sprintf("acknowledged the failover of %s (epoch %d, %s -> %s) as %s",
			lf.At.Format(time.RFC3339), lf.Epoch, lf.From, lf.To, lf.AcknowledgedBy)
	}
	return printState(stdout, f.json, st, summary)
}

// runHistory implements `quire history`.
func runHistory(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("history", stderr)
	f := addClusterFlags(fs)
	if _, err := positional(fs, args); err != nil {
		return err
	}
	cl, ctx, done, err := f.connect("history")
	if err != nil {
		return err
	}
	defer done()
	h, err := cl.History(ctx)
	if err != nil {
		return err
	}
	if f.json {
		return printJSON(stdout, h)
	}
	return printHistory(stdout, h)
}

// printHistory prints the decision log, one decision a line, then the
// epoch history with each promotion's certificate.
func printHistory(w io.Writer, h manager.History) error {
	if len(h.Decisions) == 0 {
		fmt.Fprintln(w, "no decisions recorded")
	}
	for _, d := range h.Decisions {
		node := d.Node
		if node == "" {
			node = "-"
		}
		by := ""
		if d.By != "" {
			by = " by " + d.By
		}
		fmt.Fprintf(w, "%s  %-9s  epoch %d  %s%s: %s\n", d.At.UTC().Format("2006-01-02T15:04:05.000Z"), d.Kind, d.Epoch, node, by, d.Reason)
	}
	if len(h.Epochs) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EPOCH\tPRIMARY\tFIRST SEQNO\tSTARTED\tAUTOMATIC\tCERTIFICATE")
	for _, e := range h.Epochs {
		at := "-"
		if !e.At.IsZero() {
			at = e.At.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\n", e.Epoch, e.Primary, e.FirstSeqno, at, yesNo(e.Automatic), certificateText(e.Certificate))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if lf := h.LastFailover; lf != nil {
		ack := "not acknowledged (quire ack-failover)"
		if lf.Acknowledged {
			ack = fmt.Sprintf("acknowledged by %s at %s", lf.AcknowledgedBy, lf.AcknowledgedAt.UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(w, "\nlast automatic failover %s: epoch %d, %s -> %s; %s\n", lf.At.UTC().Format(time.RFC3339), lf.Epoch, lf.From, lf.To, ack)
	}
	return nil
}

// certificateText summarizes a failover certificate in one line.
func certificateText(c *manager.Certificate) string {
	if c == nil {
		return "-"
	}
	s := fmt.Sprintf("commit index %d (%s), new primary at %d/%d", c.CommitIndex, c.CommitIndexFrom, c.PrimaryEpoch, c.PrimarySeqno)
	if len(c.Positions) > 0 {
		ids := slices.Sorted(maps.Keys(c.Positions))
		var ps []string
		for _, id := range ids {
			ps = append(ps, id+" "+c.Positions[id])
		}
		s += "; positions " + strings.Join(ps, ", ")
	}
	if c.LossPossibleSince > 0 {
		s += fmt.Sprintf("; LOSS POSSIBLE from seqno %d (degraded)", c.LossPossibleSince)
	}
	return s
}

// runMembers implements `quire members [list|add|update|remove]`.
func runMembers(args []string, stdout, stderr io.Writer) error {
	sub := "list"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	name := "members " + sub
	fs := newFlags(name, stderr)
	f := addClusterFlags(fs)
	switch sub {
	case "list":
		if _, err := positional(fs, args); err != nil {
			return err
		}
		cl, ctx, done, err := f.connect(name)
		if err != nil {
			return err
		}
		defer done()
		st, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		if f.json {
			return printJSON(stdout, st.Members)
		}
		return printMembers(stdout, st.ClusterState)

	case "add", "update":
		id := fs.String("id", "", "member id")
		mysql := fs.String("mysql", "", "host:port of its mariadbd")
		agent := fs.String("agent", "", "host:port of its agent (gRPC)")
		mgr := fs.String("manager", "", "host:port of its manager's Raft, if the host runs one")
		priority := fs.Int("priority", 0, "breaks ties between equally advanced candidates; higher wins")
		noPrimary := fs.Bool("no-primary", false, "never promote this member")
		mayBePrimary := fs.Bool("may-be-primary", false, "allow promoting this member again (update)")
		if _, err := positional(fs, args); err != nil {
			return err
		}
		if *id == "" {
			return fmt.Errorf("%s: --id is required: %w", name, errUsage)
		}
		if *noPrimary && *mayBePrimary {
			return fmt.Errorf("%s: --no-primary and --may-be-primary contradict each other: %w", name, errUsage)
		}
		set := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
		cl, ctx, done, err := f.connect(name)
		if err != nil {
			return err
		}
		defer done()
		m := manager.Member{ID: *id, MySQLAddr: *mysql, AgentAddr: *agent, ManagerAddr: *mgr, Priority: *priority, MayBePrimary: !*noPrimary}
		var st manager.ClusterState
		if sub == "add" {
			st, err = cl.AddMember(ctx, m)
		} else {
			// Change only the fields given.
			ms, lerr := cl.Members(ctx)
			if lerr != nil {
				return lerr
			}
			i := slices.IndexFunc(ms, func(x manager.Member) bool { return x.ID == *id })
			if i < 0 {
				return fmt.Errorf("members update: %q is not a member", *id)
			}
			m = ms[i]
			if set["mysql"] {
				m.MySQLAddr = *mysql
			}
			if set["agent"] {
				m.AgentAddr = *agent
			}
			if set["manager"] {
				m.ManagerAddr = *mgr
			}
			if set["priority"] {
				m.Priority = *priority
			}
			if set["no-primary"] || set["may-be-primary"] {
				m.MayBePrimary = !*noPrimary
			}
			st, err = cl.UpdateMember(ctx, m)
		}
		if err != nil {
			return err
		}
		verb := map[string]string{"add": "added", "update": "updated"}[sub]
		return printState(stdout, f.json, st, fmt.Sprintf("%s %s (mysql %s, agent %s); %d members", verb, m.ID, m.MySQLAddr, m.AgentAddr, len(st.Members)))

	case "remove":
		id := fs.String("id", "", "member id")
		if _, err := positional(fs, args); err != nil {
			return err
		}
		if *id == "" {
			return fmt.Errorf("members remove: --id is required: %w", errUsage)
		}
		cl, ctx, done, err := f.connect(name)
		if err != nil {
			return err
		}
		defer done()
		st, err := cl.RemoveMember(ctx, *id)
		if err != nil {
			return err
		}
		return printState(stdout, f.json, st, fmt.Sprintf("removed %s; %d members", *id, len(st.Members)))
	}
	return fmt.Errorf("members: unknown subcommand %q (list, add, update, remove): %w", sub, errUsage)
}

func printMembers(w io.Writer, st manager.ClusterState) error {
	if len(st.Members) == 0 {
		_, err := fmt.Fprintln(w, "no members")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tMYSQL\tAGENT\tMANAGER\tPRIORITY\tMAY BE PRIMARY\tSYNC\tPRIMARY")
	for _, m := range st.Members {
		mgr := m.ManagerAddr
		if mgr == "" {
			mgr = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", m.ID, m.MySQLAddr, m.AgentAddr, mgr, m.Priority,
			yesNo(m.MayBePrimary), yesNo(slices.Contains(st.SyncSet, m.ID)), yesNo(m.ID == st.Primary))
	}
	return tw.Flush()
}
