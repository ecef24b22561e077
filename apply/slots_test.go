package apply

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestPartialBlockSlots: with one partial-block slot, a channel whose
// queue ran dry waits while another channel applies a partial block, and
// the records that reach it meanwhile join its block; a wait longer than
// BlockTime goes ahead without the slot, so a stuck channel cannot hold
// the others up.
func TestPartialBlockSlots(t *testing.T) {
	insts := startInstances(t, 2, 100)
	src, rep := insts[0], insts[1]
	names := distinctSchemas(2, 2)
	sa, sb := names[0], names[1]
	mustExec(t, src,
		"CREATE DATABASE "+sa, "CREATE TABLE "+sa+".t (id INT PRIMARY KEY)",
		"CREATE DATABASE "+sb, "CREATE TABLE "+sb+".t (id INT PRIMARY KEY)")
	setup := uint64(len(binlogRecords(t, src)))
	ins := func(schema string, id int) string { return fmt.Sprintf("INSERT INTO %s.t VALUES (%d)", schema, id) }
	mustExec(t, src, ins(sa, 1), ins(sb, 1), ins(sb, 2), ins(sb, 3), ins(sb, 4), ins(sa, 2), ins(sb, 5))
	recs := binlogRecords(t, src)
	if got := uint64(len(recs)) - setup; got != 7 {
		t.Fatalf("%d records after set-up, want 7", got)
	}
	// seqno of the i-th statement above
	seq := func(i int) uint64 { return setup + uint64(i) }

	// run starts an applier that resumes from the restart rows and whose
	// sa channel blocks in its block starting at stuck until release.
	run := func(t *testing.T, blockTime time.Duration, from, stuck uint64) (a *Applier, reg *prometheus.Registry, ci *Watermark, release func(), stop func() error) {
		reg = prometheus.NewRegistry()
		a, err := New(Config{DSN: rep.DSN(""), Channels: 2, BlockSize: 10, BlockTime: blockTime, PartialBlocks: 1, Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		entered, gate := make(chan struct{}), make(chan struct{})
		chA := a.shards.Channel(a.shards.Shard(sa))
		a.hooks.beforeExec = func(ch int, first, _ uint64, slotted bool) {
			if ch == chA && first == stuck {
				if !slotted {
					t.Errorf("channel %d applies a one-transaction block without a partial-block slot", ch)
				}
				close(entered)
				<-gate
			}
		}
		ci = committedIndex(from)
		stop = startRun(t, a, &memSource{recs}, ci)
		if err := a.WaitApplied(context.Background(), from); err != nil {
			t.Fatal(err)
		}
		ci.Set(stuck)
		select {
		case <-entered:
		case <-time.After(30 * time.Second):
			t.Fatal("the channel of " + sa + " never applied its block")
		}
		var once sync.Once
		return a, reg, ci, func() { once.Do(func() { close(gate) }) }, stop
	}
	chB := func(a *Applier) ChannelStatus {
		return a.Status().Channels[a.shards.Channel(a.shards.Shard(sb))]
	}
	waiters := func(a *Applier) int32 {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.rs.slotWaiters.Load()
	}

	t.Run("records join the waiting block", func(t *testing.T) {
		a, _, ci, release, stop := run(t, time.Minute, setup, seq(1))
		defer stop()
		defer release()
		before := chB(a)
		ci.Set(seq(2))
		waitFor(t, "the channel of "+sb+" to wait for the slot", 30*time.Second, func() bool { return waiters(a) == 1 })
		ci.Set(seq(5))
		waitFor(t, "the channel of "+sb+" to take every record it was given", 30*time.Second, func() bool {
			return a.Status().Inflight == 5 && chB(a).Queued == 0
		})
		if got := chB(a); got.Transactions != before.Transactions {
			t.Fatalf("the channel of %s committed %d transactions while the slot was taken", sb, got.Transactions-before.Transactions)
		}
		release()
		if err := a.WaitApplied(context.Background(), seq(5)); err != nil {
			t.Fatal(err)
		}
		got := chB(a)
		if tx, blocks := got.Transactions-before.Transactions, got.Blocks-before.Blocks; tx != 4 || blocks != 1 {
			t.Fatalf("the channel of %s committed %d transactions in %d blocks, want 4 in 1", sb, tx, blocks)
		}
		if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	})

	t.Run("a long wait goes without the slot", func(t *testing.T) {
		a, reg, ci, release, stop := run(t, 300*time.Millisecond, seq(5), seq(6))
		defer stop()
		defer release()
		ci.Set(seq(7))
		waitFor(t, "the channel of "+sb+" to apply without the slot", 30*time.Second, func() bool { return chB(a).Seqno == seq(7) })
		if n := counterSum(t, reg, "quire_apply_partial_block_slot_timeouts_total"); n != 1 {
			t.Errorf("slot timeouts: %v, want 1", n)
		}
		release()
		if err := a.WaitApplied(context.Background(), seq(7)); err != nil {
			t.Fatal(err)
		}
		if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		sameData(t, src.DB, rep.DB)
	})
}

// counterSum adds up every series of the counter name in reg.
func counterSum(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}
