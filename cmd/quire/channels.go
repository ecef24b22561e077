package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/quire-ha/quire/agent"
)

// runChannels prints a replica agent's applier channels, read from its
// /status.
func runChannels(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("channels", stderr)
	addr := fs.String("agent", "", "the agent's HTTP address (http_listen), e.g. http://db2:7480")
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long without an answer")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *addr == "" {
		return fmt.Errorf("channels: --agent is required: %w", errUsage)
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
