package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/api/agentpb"
	"github.com/quire-ha/quire/certs"
)

// runChannels prints a replica agent's applier channels, read from its
// /status, or with --set-count changes their number through the agent's
// control service.
func runChannels(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("channels", stderr)
	addr := fs.String("agent", "", "the agent's HTTP address (http_listen), e.g. http://db2:7480; with --set-count its gRPC address (listen), e.g. db2:7400")
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long without an answer (with --set-count: default 5m)")
	setCount := fs.Int("set-count", 0, "drain every channel to one seqno, then switch the applier to this many channels (1..256)")
	tf := addTLSFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *addr == "" {
		return fmt.Errorf("channels: --agent is required: %w", errUsage)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["set-count"] {
		if !given["timeout"] {
			*timeout = 5 * time.Minute
		}
		return setChannels(*addr, *setCount, *timeout, tf, *asJSON, stdout)
	}
	url := strings.TrimRight(*addr, "/")
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	st, err := fetchAgentStatus(ctx, url+"/status")
	if err != nil {
		return fmt.Errorf("channels: %w", err)
	}
	if st.Apply == nil {
		return fmt.Errorf("channels: agent %s is not a replica (role %s): only replicas apply", st.Node, st.Role.Kind)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st.Apply)
	}
	return printChannels(stdout, st.Node, st.Apply)
}

// tlsFlags are the gRPC client's TLS flags, as the cluster commands take
// them.
type tlsFlags struct {
	ca, cert, key string
	insecure      bool
}

func addTLSFlags(fs *flag.FlagSet) *tlsFlags {
	f := &tlsFlags{}
	fs.StringVar(&f.ca, "tls-ca", os.Getenv("QUIRE_TLS_CA"), "CA certificate (env QUIRE_TLS_CA; with --set-count)")
	fs.StringVar(&f.cert, "tls-cert", os.Getenv("QUIRE_TLS_CERT"), "client certificate (env QUIRE_TLS_CERT; with --set-count)")
	fs.StringVar(&f.key, "tls-key", os.Getenv("QUIRE_TLS_KEY"), "client key (env QUIRE_TLS_KEY; with --set-count)")
	fs.BoolVar(&f.insecure, "insecure", false, "plaintext gRPC (agents with tls.insecure_plaintext; with --set-count)")
	return f
}

// creds checks the flags and returns the transport credentials.
func (f *tlsFlags) creds(name string) (credentials.TransportCredentials, error) {
	switch {
	case f.insecure && (f.ca != "" || f.cert != "" || f.key != ""):
		return nil, fmt.Errorf("%s: --insecure together with --tls-* files; choose one: %w", name, errUsage)
	case f.insecure:
		return insecure.NewCredentials(), nil
	case f.ca == "" || f.cert == "" || f.key == "":
		return nil, fmt.Errorf("%s: give --tls-ca, --tls-cert and --tls-key (or QUIRE_TLS_CA, QUIRE_TLS_CERT, QUIRE_TLS_KEY), or --insecure: %w", name, errUsage)
	}
	tc, err := certs.ClientConfig(certs.Files{CA: f.ca, Cert: f.cert, Key: f.key}, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	certs.RequirePeer(tc, certs.WantRole(certs.RoleAgent)) // --agent names an agent
	return credentials.NewTLS(tc), nil
}

// channelsResult is what `quire channels --set-count --json` prints.
type channelsResult struct {
	Node         string `json:"node"`
	OldCount     uint32 `json:"old_count"`
	Count        uint32 `json:"count"`
	DrainedSeqno uint64 `json:"drained_seqno"`
	Running      bool   `json:"running"`
	ApplierError string `json:"applier_error,omitempty"`
	ConfigNote   string `json:"config_note,omitempty"`
}

// setChannels calls the agent's SetChannels and prints the outcome.
func setChannels(addr string, n int, timeout time.Duration, tf *tlsFlags, asJSON bool, stdout io.Writer) error {
	const name = "channels --set-count"
	switch {
	case n < 1 || n > agent.MaxChannels:
		return fmt.Errorf("%s: %d is out of range (1..%d): %w", name, n, agent.MaxChannels, errUsage)
	case strings.Contains(addr, "://"):
		return fmt.Errorf("%s: --agent %q: give the agent's gRPC address (its listen), host:port, not a URL: %w", name, addr, errUsage)
	case timeout <= 0:
		return fmt.Errorf("%s: --timeout %s is not positive: %w", name, timeout, errUsage)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s: --agent %q is not host:port: %w", name, addr, errUsage)
	}
	creds, err := tf.creds(name)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("%s: %v: %w", name, err, errUsage)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// The agent gets a little less time, so its own error comes back.
	ms := min(max(timeout-time.Second, time.Second).Milliseconds(), math.MaxUint32)
	resp, err := agentpb.NewAgentControlClient(conn).SetChannels(ctx, &agentpb.SetChannelsRequest{Count: uint32(n), TimeoutMs: uint32(ms)})
	if err != nil {
		st := status.Convert(err)
		return fmt.Errorf("%s: agent %s: %s (%s)", name, addr, st.Message(), st.Code())
	}
	node := resp.GetStatus().GetNodeId()
	out := channelsResult{Node: node, OldCount: resp.OldCount, Count: resp.Count, DrainedSeqno: resp.DrainedSeqno,
		Running: resp.Running, ApplierError: resp.ApplierError, ConfigNote: resp.ConfigNote}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		switch {
		case resp.OldCount == resp.Count:
			fmt.Fprintf(stdout, "%s: already %d channels\n", node, resp.Count)
		case resp.OldCount == 0:
			fmt.Fprintf(stdout, "%s: no restart rows yet; now %d channels\n", node, resp.Count)
		default:
			fmt.Fprintf(stdout, "%s: drained %d channels to seqno %d; now %d channels\n", node, resp.OldCount, resp.DrainedSeqno, resp.Count)
		}
		if resp.Running {
			fmt.Fprintln(stdout, "applier running")
		}
		if resp.ConfigNote != "" {
			fmt.Fprintln(stdout, "note:", resp.ConfigNote)
		}
	}
	if !resp.Running {
		return fmt.Errorf("%s: agent %s switched to %d channels, but its applier is not running: %s (see quire channels)", name, addr, resp.Count, resp.ApplierError)
	}
	return nil
}

func fetchAgentStatus(ctx context.Context, url string) (agent.Status, error) {
	var st agent.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("GET %s: %w", url, err)
	}
	return st, nil
}

// printChannels writes the applier summary and one line per channel.
func printChannels(w io.Writer, node string, ap *agent.ApplyStatus) error {
	state := "running"
	if !ap.Running {
		state = "NOT RUNNING"
	}
	fmt.Fprintf(w, "%s: applier %s, applied %d, commit index %d, lag %d tx / %s, %.0f tx/s, %d serialized, %d runs\n",
		node, state, ap.AppliedSeqno, ap.CommitSeqno, ap.LagTransactions, seconds(ap.LagSeconds), ap.Rate, ap.Serialized, ap.Runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHANNEL\tSHARDS\tSEQNO\tLAG(TX)\tLAG(S)\tQUEUE\tTRANSACTIONS\tSERIALIZED\tBLOCKS\tAVG BLOCK\tSTATE")
	for _, c := range ap.Channels {
		name, serialized := strconv.Itoa(c.Channel), "-"
		if c.Channel < 0 {
			name, serialized = "serial", strconv.FormatUint(c.Transactions, 10)
		}
		shards := strings.Join(c.Shards, ",")
		if shards == "" {
			shards = "-"
		}
		st := "ok"
		if c.Stopped != nil {
			st = fmt.Sprintf("STOPPED at %d", c.Stopped.Seqno)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%d\t%s\t%d\t%.1f\t%s\n", name, shards, c.Seqno, c.LagTransactions,
			seconds(c.LagSeconds), c.Queued, c.Transactions, serialized, c.Blocks, c.AvgBlock, st)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range ap.Errors {
		fmt.Fprintf(w, "stopped: seqno %d (GTID %s, schemas %s) on channel %d, %d retries: %s\n",
			e.Seqno, e.GTID, strings.Join(e.Schemas, ","), e.Channel, e.Retries, e.Error)
	}
	if ap.LastError != "" {
		fmt.Fprintf(w, "last error (%s): %s\n", ap.LastErrorAt.Format(time.RFC3339), ap.LastError)
	}
	for _, s := range ap.Warnings {
		fmt.Fprintln(w, "warning:", s)
	}
	return nil
}

func seconds(s *float64) string {
	if s == nil {
		return "?"
	}
	return strconv.FormatFloat(*s, 'f', 0, 64) + "s"
}
