package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/api/agentpb"
)

// controlClient dials an agent's control service (plaintext, as agenttest
// configures it).
func controlClient(t *testing.T, addr string) agentpb.AgentControlClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentpb.NewAgentControlClient(conn)
}

// TestApplyChannelCountChange switches db2's applier from 4 to 2 channels
// with SetChannels while the 8-schema workload runs, checks the restart
// rows, the data and that the count survives an agent restart; then
// restarts db3's agent with 3 channels configured while its rows are at
// different seqnos: the applier stays stopped and its status names the
// command, which, run with the quire binary, drains and switches it.
func TestApplyChannelCountChange(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	cli := quireCLI(t)
	dbs, procs := applyCluster(t, 1)
	db := dbs[0].DB
	db.SetMaxOpenConns(16)
	setupSchemas(t, db)
	setup := binlogTransactions(t, dbs[0])
	for _, p := range procs[1:] {
		waitApplied(t, p, setup, time.Minute)
	}
	db2, db3 := procs[1], procs[2]
	c1, c2 := controlClient(t, procs[0].GRPCAddr), controlClient(t, db2.GRPCAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Refused requests change nothing.
	for _, tc := range []struct {
		c       agentpb.AgentControlClient
		count   uint32
		code    codes.Code
		mention string
	}{
		{c2, 0, codes.InvalidArgument, "count is required"},
		{c2, 257, codes.InvalidArgument, "out of range"},
		{c1, 2, codes.FailedPrecondition, "not a replica"},
	} {
		_, err := tc.c.SetChannels(ctx, &agentpb.SetChannelsRequest{Count: tc.count})
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.mention) {
			t.Fatalf("SetChannels(%d): %v, want %s mentioning %q", tc.count, err, tc.code, tc.mention)
		}
	}
	if rows := restartRows(t, dbs[1].DB); len(rows) != 4 {
		t.Fatalf("db2 after refused requests: %d restart rows, want 4", len(rows))
	}

	// Under the workload, db2 switches from 4 to 2 channels.
	stop := make(chan struct{})
	type result struct {
		n   int64
		err error
	}
	wdone := make(chan result, 1)
	go func() {
		n, err := workload(db, 1<<30, 8, stop)
		wdone <- result{n, err}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
			<-wdone
		}
	}()
	waitApplied(t, db2, setup+300, time.Minute)
	began := time.Now()
	resp, err := c2.SetChannels(ctx, &agentpb.SetChannelsRequest{Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	t.Logf("SetChannels(2) on db2 under the workload: %+v in %s", resp, took.Round(time.Millisecond))
	if resp.OldCount != 4 || resp.Count != 2 || !resp.Running || resp.DrainedSeqno < setup+300 ||
		!strings.Contains(resp.ConfigNote, "apply.channels") || resp.Status.GetNodeId() != "db2" {
		t.Fatalf("SetChannels(2): %+v", resp)
	}
	rows := restartRows(t, dbs[1].DB)
	if len(rows) != 2 || slices.Min(rows) < resp.DrainedSeqno {
		t.Fatalf("db2 right after the switch: restart rows %v, want 2 rows at or past %d", rows, resp.DrainedSeqno)
	}
	waitApplied(t, db2, resp.DrainedSeqno+300, time.Minute) // the new channels apply the workload
	close(stop)
	res := <-wdone
	if res.err != nil {
		t.Fatal(res.err)
	}
	last := level(t, dbs[0], procs, "after_switch")
	sameTables(t, "db2", db, dbs[1].DB)
	sameTables(t, "db3", db, dbs[2].DB)
	checkRows(t, "db2", dbs[1].DB, 2, last)
	checkRows(t, "db3", dbs[2].DB, 4, last)
	st := waitApplied(t, db2, last, time.Second)
	if len(st.Apply.Channels) != 3 || !hasWarning(st.Apply, "set apply.channels: 2") {
		t.Fatalf("db2 status after the switch: %d channels, warnings %q", len(st.Apply.Channels), st.Apply.Warnings)
	}
	logs := db2.Logs()
	for _, want := range []string{"channel count change: applier stopped, draining", "channel count change: drained",
		"channel count change: switched to 2 channels"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("db2's log lacks %q", want)
		}
	}
	t.Logf("workload: %d transactions; db2 drained to %d and switched in %s; all at %d with 2 (db2) and 4 (db3) channels, tables equal",
		res.n, resp.DrainedSeqno, took.Round(time.Millisecond), last)

	// The count survives a restart of the agent, whose configuration still
	// says 4: it warns.
	db2.Kill()
	if err := db2.Restart(); err != nil {
		t.Fatal(err)
	}
	st = db2.WaitStatus("db2 applying with 2 channels after a restart", time.Minute, func(s agent.Status) bool {
		return s.Apply != nil && s.Apply.Running && len(s.Apply.Channels) == 3
	})
	if !hasWarning(st.Apply, "apply.channels in the configuration is 4") {
		t.Fatalf("db2 after a restart: warnings %q", st.Apply.Warnings)
	}
	if logs := db2.Logs(); !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "apply.channels in the configuration is 4, but `quire channels --set-count` set 2 channels") {
		t.Fatalf("db2's log after the restart lacks the warning:\n%s", db2.LogTail(20))
	}

	// Uneven rows on db3: writes to one schema move one channel only.
	for range 5 {
		mustExec(t, dbs[0], "UPDATE s1.counter SET n = n + 1 WHERE id = 1")
	}
	uneven := binlogTransactions(t, dbs[0])
	waitApplied(t, db3, uneven, time.Minute)
	rows = restartRows(t, dbs[2].DB)
	if slices.Min(rows) == slices.Max(rows) {
		t.Fatalf("db3's restart rows %v are even; the test needs them uneven", rows)
	}
	// db3 restarts with apply.channels: 3.
	db3.Kill()
	cfgPath := filepath.Join(db3.Dir, "agent.yaml")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "channels: 4\n") {
		t.Fatalf("db3's configuration does not say channels: 4:\n%s", b)
	}
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(string(b), "channels: 4\n", "channels: 3\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := db3.Restart(); err != nil {
		t.Fatal(err)
	}
	cmd := fmt.Sprintf("quire channels --agent %s --set-count 3", db3.GRPCAddr)
	st = db3.WaitStatus("db3's applier refused", time.Minute, func(s agent.Status) bool {
		return s.Apply != nil && s.Apply.LastError != ""
	})
	if st.Apply.Running || !strings.Contains(st.Apply.LastError, cmd) || !strings.Contains(st.Apply.LastError, "from 4 to 3") || !st.Apply.RetryAt.IsZero() {
		t.Fatalf("db3 refused: running %v, retry at %v, last error %q; want it stopped, naming %q", st.Apply.Running, st.Apply.RetryAt, st.Apply.LastError, cmd)
	}
	t.Logf("db3 refused: %s", st.Apply.LastError)
	// Observation window for a negative: the applier stays stopped, no
	// retries (the old back-off would have retried 3-4 times by now).
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		s, err := db3.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.Apply == nil || s.Apply.Running || s.Apply.Runs != st.Apply.Runs {
			t.Fatalf("db3 while refused: %+v; runs was %d", s.Apply, st.Apply.Runs)
		}
		time.Sleep(100 * time.Millisecond) // sampling interval of the window
	}
	if code, body := httpGet(t, "http://"+db3.HTTPAddr+"/replica"); code != http.StatusServiceUnavailable || !strings.Contains(body, cmd) {
		t.Fatalf("/replica on the refused db3: %d %q", code, body)
	}
	if !strings.Contains(db3.Logs(), cmd) {
		t.Fatalf("db3's log does not name %q:\n%s", cmd, db3.LogTail(20))
	}
	if got := restartRows(t, dbs[2].DB); !slices.Equal(got, rows) {
		t.Fatalf("db3's restart rows moved while refused: %v, were %v", got, rows)
	}

	// The command the status names fixes it.
	args := append(strings.Fields(cmd)[1:], "--insecure")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	t.Logf("%s:\n%s", cmd, out)
	if want := fmt.Sprintf("db3: drained 4 channels to seqno %d; now 3 channels\napplier running\n", uneven); string(out) != want {
		t.Fatalf("%s printed %q, want %q", cmd, out, want)
	}
	checkRows(t, "db3", dbs[2].DB, 3, uneven)
	if _, err := os.Stat(filepath.Join(db3.Dir, "data", "apply-channels.json")); !os.IsNotExist(err) {
		t.Fatalf("db3 keeps a channel count setting though its configuration says 3: %v", err)
	}
	last = level(t, dbs[0], procs, "final")
	for i, p := range procs[1:] {
		sameTables(t, p.Opts.Node, db, dbs[i+1].DB)
	}
	checkRows(t, "db2", dbs[1].DB, 2, last)
	checkRows(t, "db3", dbs[2].DB, 3, last)
	if code, body := httpGet(t, "http://"+db3.HTTPAddr+"/replica"); code != http.StatusOK {
		t.Fatalf("/replica on db3 after the fix: %d %q", code, body)
	}
}

func hasWarning(ap *agent.ApplyStatus, s string) bool {
	return slices.ContainsFunc(ap.Warnings, func(w string) bool { return strings.Contains(w, s) })
}
