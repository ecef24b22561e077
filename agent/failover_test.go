package agent_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/manager/managertest"
)

// Automatic failover with real managers, agents and MariaDB (issue
// "Automatic failover"): under a writer that records every acknowledged
// id, the primary's mariadbd is killed (the fast path), or its whole node
// (the timeout path). A replica becomes primary of epoch 2, the writer
// follows the managers' status onto it, no acknowledged id is missing
// there, and the third node streams from the new primary.

// writer inserts consecutive ids into app.t through the application's
// account on whichever node the managers' status names primary, and
// records the ids whose commit was acknowledged.
type writer struct {
	t   *testing.T
	cli *manager.Client

	mu       sync.Mutex
	acked    []int
	ackTimes []time.Time
	// lastAck and the longest gap between two acknowledgements.
	lastAck time.Time
	maxGap  time.Duration
	errs    int
	lastErr error

	// The ids are first, first+step, first+2*step, ...
	first, step int

	cancel context.CancelFunc
	done   chan struct{}
}

func startWriter(t *testing.T, cli *manager.Client) *writer {
	return startWriterAt(t, cli, 1, 1)
}

// startWriterAt starts a writer of ids first, first+step, ...: n writers
// with first 1..n and step n never collide.
func startWriterAt(t *testing.T, cli *manager.Client, first, step int) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{t: t, cli: cli, cancel: cancel, done: make(chan struct{}), first: first, step: step}
	go w.run(ctx)
	t.Cleanup(w.stop)
	return w
}

// primaryAddr asks the managers where the primary's database is.
func (w *writer) primaryAddr(ctx context.Context) (string, error) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := w.cli.Status(sctx)
	if err != nil {
		return "", err
	}
	for _, m := range st.Members {
		if m.ID == st.Primary {
			return m.MySQLAddr, nil
		}
	}
	return "", fmt.Errorf("no primary in the managers' status (epoch %d)", st.Epoch)
}

func (w *writer) run(ctx context.Context) {
	defer close(w.done)
	var db *sql.DB
	var addr string
	defer func() {
		if db != nil {
			db.Close()
		}
	}()
	id := w.first
	for ctx.Err() == nil {
		if db == nil {
			a, err := w.primaryAddr(ctx)
			if err != nil {
				w.fail(err)
				continue
			}
			if db, err = sql.Open("mysql", "app:app@tcp("+a+")/app?timeout=1s&readTimeout=10s&writeTimeout=10s"); err != nil {
				w.fail(err)
				continue
			}
			addr = a
		}
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := db.ExecContext(ictx, "INSERT INTO app.t VALUES (?, 'writer')", id)
		cancel()
		if err != nil && strings.Contains(err.Error(), "Duplicate entry") {
			err = nil // an earlier try committed it
		}
		if err != nil {
			w.fail(err)
			// Ask the managers again: the primary may have changed.
			if a, aerr := w.primaryAddr(ctx); aerr == nil && a != addr {
				db.Close()
				db = nil
			}
			continue
		}
		now := time.Now()
		w.mu.Lock()
		w.acked = append(w.acked, id)
		w.ackTimes = append(w.ackTimes, now)
		if !w.lastAck.IsZero() {
			w.maxGap = max(w.maxGap, now.Sub(w.lastAck))
		}
		w.lastAck = now
		w.mu.Unlock()
		id += w.step
	}
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	w.errs++
	w.lastErr = err
	w.mu.Unlock()
	time.Sleep(20 * time.Millisecond) // retry interval
}

func (w *writer) stop() {
	w.cancel()
	<-w.done
}

// count returns how many ids were acknowledged.
func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// waitAcked waits until n ids are acknowledged.
func (w *writer) waitAcked(n int, d time.Duration) {
	w.t.Helper()
	deadline := time.Now().Add(d)
	for w.count() < n {
		if time.Now().After(deadline) {
			w.mu.Lock()
			err := w.lastErr
			w.mu.Unlock()
			w.t.Fatalf("the writer has %d acknowledged ids after %s, want %d (last error %v)", w.count(), d, n, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// waitEpoch polls the managers' status until epoch is committed and
// returns it.
func waitEpoch(t *testing.T, cli *manager.Client, epoch uint64, d time.Duration) manager.Status {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cli.Status(ctx)
		cancel()
		if err == nil && st.Epoch >= epoch {
			return st
		}
		if time.Now().After(deadline) {
			reason := ""
			if err == nil && st.Failover != nil {
				reason = st.Failover.State + ": " + st.Failover.Reason
			}
			t.Fatalf("epoch %d not committed within %s (status err %v; failover %s)", epoch, d, err, reason)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

// checkAcked checks that every acknowledged id is in app.t on node i.
func (c *managedCluster) checkAcked(i int, acked []int) {
	c.t.Helper()
	rows, err := c.dbs[i].DB.Query("SELECT id FROM app.t")
	if err != nil {
		c.t.Fatal(err)
	}
	defer rows.Close()
	have := map[int]bool{}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			c.t.Fatal(err)
		}
		have[id] = true
	}
	if err := rows.Err(); err != nil {
		c.t.Fatal(err)
	}
	var missing []int
	for _, id := range acked {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		c.t.Fatalf("db%d lacks %d acknowledged ids: %v", i+1, len(missing), missing[:min(len(missing), 20)])
	}
}

// failoverCluster starts the managed cluster with automatic failover and
// the given failover timeout.
func failoverCluster(t *testing.T, timeout time.Duration) (*managedCluster, *manager.Client) {
	c := startManagedWith(t, managertest.Options{Insecure: true, AutoFailover: true})
	cli := c.mc.Client("operator")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.SetSettings(ctx, manager.Settings{FailoverTimeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	return c, cli
}

// afterFailover checks the cluster after a failover away from db1: the
// new primary holds every acknowledged id, the third node streams from
// it and holds them too, and the history tells what happened.
func (c *managedCluster) afterFailover(cli *manager.Client, w *writer, killed time.Time, wantKind string) {
	t := c.t
	st := waitEpoch(t, cli, 2, time.Minute)
	committed := time.Since(killed)
	if st.Epoch != 2 || (st.Primary != "db2" && st.Primary != "db3") {
		t.Fatalf("after the failover: epoch %d primary %s", st.Epoch, st.Primary)
	}
	newIdx, otherIdx := 1, 2
	if st.Primary == "db3" {
		newIdx, otherIdx = 2, 1
	}
	newP, other := c.procs[newIdx], c.procs[otherIdx]
	before := w.count()
	newP.WaitStatus(st.Primary+" writable primary of epoch 2", time.Minute, func(s agent.Status) bool {
		return s.Role.Kind == agent.RolePrimary && s.Role.Epoch == 2 && s.Writable
	})
	writable := time.Since(killed)
	// The writer continues on the new primary.
	w.waitAcked(before+20, time.Minute)
	w.stop()
	w.mu.Lock()
	acked := slices.Clone(w.acked)
	gap, errs := w.maxGap, w.errs
	var resumed time.Duration
	for _, at := range w.ackTimes {
		if at.After(killed.Add(committed)) {
			resumed = at.Sub(killed)
			break
		}
	}
	w.mu.Unlock()
	t.Logf("failover: epoch 2 committed %s after the kill; %s writable after %s; the writer's first acknowledgement in epoch 2 came %s after the kill (longest gap between acknowledgements %s, %d errors); %d ids acknowledged",
		committed.Round(time.Millisecond), st.Primary, writable.Round(time.Millisecond), resumed.Round(time.Millisecond),
		gap.Round(time.Millisecond), errs, len(acked))
	c.checkAcked(newIdx, acked)
	// The third node streams from the new primary and holds everything.
	other.WaitStatus(other.Opts.Node+" replica of "+st.Primary+" in epoch 2", time.Minute, func(s agent.Status) bool {
		return s.Role.Kind == agent.RoleReplica && s.Role.Epoch == 2 && s.Role.PrimaryAgent == newP.GRPCAddr && s.RoleError == ""
	})
	c.waitRows(len(acked), time.Minute, otherIdx)
	c.checkAcked(otherIdx, acked)
	// Load balancers' health checks follow: /primary on the new primary
	// only, /replica on the other node.
	waitHTTP(t, "http://"+newP.HTTPAddr+"/primary", http.StatusOK, time.Minute)
	waitHTTP(t, "http://"+other.HTTPAddr+"/replica?max_lag_tx=1000", http.StatusOK, time.Minute)
	if code, body := httpGet(t, "http://"+other.HTTPAddr+"/primary"); code != http.StatusServiceUnavailable {
		t.Fatalf("/primary on the replica %s: %d %q", other.Opts.Node, code, body)
	}
	if code, body := httpGet(t, "http://"+newP.HTTPAddr+"/replica"); code != http.StatusServiceUnavailable {
		t.Fatalf("/replica on the new primary: %d %q", code, body)
	}
	// The decision log has the detection and the promotion, with a
	// certificate.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := cli.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	var detection manager.Decision
	for _, d := range h.Decisions {
		kinds = append(kinds, d.Kind)
		if d.Kind == "detection" && detection.Kind == "" {
			detection = d
		}
	}
	if !strings.Contains(detection.Reason, wantKind) || !slices.Contains(kinds, "promotion") {
		t.Fatalf("decision log %v; detection %q, want it to mention %q", kinds, detection.Reason, wantKind)
	}
	e := h.Epochs[1]
	if e.Certificate == nil || e.Certificate.PrimarySeqno < e.Certificate.CommitIndex || !e.Automatic {
		t.Fatalf("epoch 2: %+v certificate %+v", e, e.Certificate)
	}
	for _, d := range h.Decisions {
		t.Logf("history: %s %s epoch %d %s: %s", d.At.Format("15:04:05.000"), d.Kind, d.Epoch, d.Node, d.Reason)
	}
}

// TestFailoverPrimaryDatabaseKilled: kill -9 of the primary's mariadbd. Its
// agent reports the database gone and the managers fail over at once,
// without waiting for the (long) timeout.
func TestFailoverPrimaryDatabaseKilled(t *testing.T) {
	c, cli := failoverCluster(t, 30*time.Second)
	w := startWriter(t, cli)
	w.waitAcked(30, time.Minute)
	killed := time.Now()
	if err := c.dbs[0].Kill(); err != nil {
		t.Fatal(err)
	}
	c.afterFailover(cli, w, killed, "database gone")
	// The old primary's agent lives on: its /primary must say no.
	if code, body := httpGet(t, "http://"+c.procs[0].HTTPAddr+"/primary"); code != http.StatusServiceUnavailable {
		t.Fatalf("/primary on the old primary: %d %q", code, body)
	}
	// Well inside the 30 s timeout: the fast path did it.
	if d := time.Since(killed); d > 25*time.Second {
		t.Fatalf("the failover took %s: the fast path did not act", d)
	}
}

// TestFailoverPrimaryNodeKilled: kill -9 of the primary's agent and
// mariadbd (a lost host). The managers hear nothing more from it; after
// the failover timeout, with both replicas confirming that they lost the
// stream, they fail over.
func TestFailoverPrimaryNodeKilled(t *testing.T) {
	c, cli := failoverCluster(t, 2*time.Second)
	w := startWriter(t, cli)
	w.waitAcked(30, time.Minute)
	killed := time.Now()
	c.procs[0].Kill()
	if err := c.dbs[0].Kill(); err != nil {
		t.Fatal(err)
	}
	c.afterFailover(cli, w, killed, "lost their streams too")
}

// waitHTTP polls url until it answers code.
func waitHTTP(t *testing.T, url string, code int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, body := httpGet(t, url)
		if got == code {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s answered %d %q for %s, want %d", url, got, body, timeout, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
