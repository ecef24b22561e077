package apply

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
)

// shapedWorkload runs clients concurrent sessions of single-schema write
// transactions over 8 schemas on db: with hot set, 80 % of them go to s0,
// else the schema is uniform. 2 % of the transactions touch two schemas,
// every 50th one writes to s7 (the critical shard of the test's shard map),
// and once half of the transactions have run, one session alters a table
// while the others go on. It returns the number of transactions committed.
func shapedWorkload(t testing.TB, db *sql.DB, seed uint64, perClient, clients int, hot bool) int {
	t.Helper()
	ctx := context.Background()
	for s := range 8 {
		for _, q := range []string{
			fmt.Sprintf("CREATE DATABASE s%d", s),
			fmt.Sprintf("CREATE TABLE s%d.t (id INT PRIMARY KEY, counter BIGINT NOT NULL, note VARCHAR(64)) ENGINE=InnoDB", s),
			fmt.Sprintf("INSERT INTO s%d.t SELECT seq, 0, 'start' FROM s%d.seq_1_to_50", s, s),
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatalf("workload set-up: %s: %v", q, err)
			}
		}
	}
	pick := func(r *rand.Rand) int {
		if hot && r.IntN(100) < 80 {
			return 0
		}
		return r.IntN(8)
	}
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		committed int
		firstErr  error
		ddlOnce   sync.Once
	)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(c)))
			conn, err := db.Conn(ctx)
			if err != nil {
				mu.Lock()
				firstErr = errors.Join(firstErr, err)
				mu.Unlock()
				return
			}
			defer conn.Close()
			n := 0
			for i := range perClient {
				if c == 0 && i == perClient/2 {
					ddlOnce.Do(func() {
						_, err = conn.ExecContext(ctx, "ALTER TABLE s3.t ADD COLUMN extra INT NOT NULL DEFAULT 7")
					})
					if err != nil {
						break
					}
					n++
				}
				schemas := []int{pick(r)}
				switch {
				case r.IntN(100) < 2:
					if o := r.IntN(8); o != schemas[0] {
						schemas = append(schemas, o)
					}
				case r.IntN(50) == 0:
					schemas = []int{7}
				}
				slices.Sort(schemas) // one lock order: the workload must not deadlock itself
				err = func() error {
					tx, err := conn.BeginTx(ctx, nil)
					if err != nil {
						return err
					}
					defer tx.Rollback()
					for _, s := range schemas {
						for range 1 + r.IntN(3) {
							if _, err := tx.ExecContext(ctx, fmt.Sprintf("UPDATE s%d.t SET counter = counter + 1, note = ? WHERE id = ?", s),
								fmt.Sprintf("c%d-%d", c, i), 1+r.IntN(50)); err != nil {
								return err
							}
						}
					}
					return tx.Commit()
				}()
				var me *mysql.MySQLError
				if errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205) {
					err = nil // rolled back whole on the source: nothing to replicate
					continue
				}
				if err != nil {
					break
				}
				n++
			}
			mu.Lock()
			committed += n
			firstErr = errors.Join(firstErr, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("workload: %v", firstErr)
	}
	return committed
}

// TestWorkloadShapes applies a concurrent workload of each shape the
// applier must handle — 8 schemas uniform, and one hot schema with 80 % of
// the load, each with 2 % two-schema transactions, DDL in the middle and a
// critical shard — with 8 channels and block commit, then checks that every
// replica table is CHECKSUM-equal to the source's, the replica's binlog
// holds exactly the source's GTIDs, the critical shard and the two-schema
// transactions ran serialized, and the hot shard did not serialize the rest.
func TestWorkloadShapes(t *testing.T) {
	perClient := 400
	if testing.Short() {
		perClient = 100
	}
	// Uniform with block size 1: the replica's binlog must hold every
	// source GTID. Hot with blocks of 10: a block carries its last GTID.
	for i, hot := range []bool{false, true} {
		name, block := "uniform", 1
		if hot {
			name, block = "hot", 10
		}
		t.Run(name, func(t *testing.T) {
			insts := startInstances(t, 2, uint32(300+10*i))
			src, rep := insts[0], insts[1]
			n := shapedWorkload(t, src.DB, uint64(7+i), perClient, 4, hot)
			recs := binlogRecords(t, src)
			m, err := NewShardMap(ShardConfig{Critical: []string{"s7"}}, 8)
			if err != nil {
				t.Fatal(err)
			}
			var wantSerial, multi, critical, hotRecs int
			for i := range recs {
				shard, ser, reason := Classify(&recs[i], m)
				if ser {
					wantSerial++
				}
				switch {
				case reason == ReasonMultiShard:
					multi++
				case reason == ReasonCritical:
					critical++
				case shard == "s0":
					hotRecs++
				}
			}
			reg := prometheus.NewRegistry()
			a, err := New(Config{DSN: rep.DSN(""), Channels: 8, BlockSize: block, Shards: ShardConfig{Critical: []string{"s7"}}, Registerer: reg,
				Logger: slog.New(slog.NewTextHandler(testLogger(t), &slog.HandlerOptions{Level: slog.LevelWarn}))})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			runApplier(t, a, &memSource{recs}, uint64(len(recs)), 3*time.Minute)
			el := time.Since(start)
			st := a.Status()
			t.Logf("%s: %d transactions committed, %d records (%d on s0, %d two-schema, %d on the critical shard), applied in %v (%.0f tx/s), %d serialized",
				name, n, len(recs), hotRecs, multi, critical, el.Round(time.Millisecond), float64(len(recs))/el.Seconds(), st.Serial.Transactions)
			if multi == 0 || critical == 0 {
				t.Fatalf("the workload lacks a shape: %d two-schema and %d critical-shard records", multi, critical)
			}
			if hot && hotRecs < len(recs)*6/10 {
				t.Fatalf("hot workload: only %d of %d records on s0", hotRecs, len(recs))
			}
			if int(st.Serial.Transactions) != wantSerial {
				t.Errorf("serial channel ran %d records, the classifier serializes %d", st.Serial.Transactions, wantSerial)
			}
			var parallel uint64
			for _, c := range st.Channels {
				parallel += c.Transactions
			}
			if parallel+st.Serial.Transactions != uint64(len(recs)) {
				t.Errorf("channels ran %d + serial %d records, want %d", parallel, st.Serial.Transactions, len(recs))
			}
			// The block-size histogram accounts for every record and block.
			var blocks, inBlocks uint64
			for _, c := range append(st.Channels, st.Serial) {
				blocks += c.Blocks
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var hBlocks uint64
			for _, mf := range mfs {
				if mf.GetName() == "quire_apply_block_size_transactions" {
					for _, m := range mf.GetMetric() {
						hBlocks += m.GetHistogram().GetSampleCount()
						inBlocks += uint64(m.GetHistogram().GetSampleSum())
					}
				}
			}
			if hBlocks != blocks || inBlocks != uint64(len(recs)) {
				t.Errorf("block size histogram: %d blocks holding %d records; status says %d blocks, %d records", hBlocks, inBlocks, blocks, len(recs))
			}
			if block > 1 && blocks >= uint64(len(recs)) {
				t.Errorf("block size %d: %d blocks for %d records, no block held two", block, blocks, len(recs))
			}
			sameData(t, src.DB, rep.DB)
			srcGTIDs, repGTIDs := binlogGTIDs(t, src), binlogGTIDs(t, rep)
			var srcPos string
			if err := src.DB.QueryRow("SELECT @@gtid_binlog_pos").Scan(&srcPos); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(repGTIDs, srcPos) {
				t.Errorf("the source's last GTID %s is not in the replica's binlog", srcPos)
			}
			for _, g := range repGTIDs {
				if !slices.Contains(srcGTIDs, g) {
					t.Errorf("the replica's binlog holds GTID %s, which the source never wrote", g)
				}
			}
			if block == 1 {
				slices.Sort(srcGTIDs)
				slices.Sort(repGTIDs)
				if !slices.Equal(srcGTIDs, repGTIDs) {
					t.Errorf("block size 1: the replica's binlog GTIDs (%d) are not the source's (%d)", len(repGTIDs), len(srcGTIDs))
				}
			}
		})
	}
}
