package main

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

// missingIDs compares two sorted id lists: how many of acked are not in
// have, and the first few of them.
func missingIDs(acked, have []int64, sampleSize int) (n int, sample []int64) {
	j := 0
	for _, id := range acked {
		for j < len(have) && have[j] < id {
			j++
		}
		if j < len(have) && have[j] == id {
			continue
		}
		n++
		if len(sample) < sampleSize {
			sample = append(sample, id)
		}
	}
	return n, sample
}

// describeID names the writer and row of an id (see writerID).
func describeID(id int64) string {
	return fmt.Sprintf("%d (writer %d row %d)", id, id/1_000_000_000_000-1, id%1_000_000_000_000)
}

// statusProblems lists what keeps `quire status` from showing a healthy
// cluster: a primary, and every node reachable, its database healthy,
// reporting its assigned role in the current epoch, with no error.
func statusProblems(st *clusterStatus) []string {
	var ps []string
	if st.Primary == "" {
		ps = append(ps, "quire status names no primary")
	}
	for _, n := range st.Nodes {
		var why []string
		if !n.Healthy {
			why = append(why, fmt.Sprintf("healthy=no (reachable=%s, database_healthy=%s)", yesNo(n.Reachable), yesNo(n.DatabaseHealthy)))
		}
		if n.ReportedRole != n.Role {
			why = append(why, fmt.Sprintf("reports role %q, assigned %q", n.ReportedRole, n.Role))
		}
		if n.Epoch != st.Epoch {
			why = append(why, fmt.Sprintf("reports epoch %d, cluster epoch %d", n.Epoch, st.Epoch))
		}
		if n.Error != "" {
			why = append(why, "role_error: "+n.Error)
		}
		if len(why) > 0 {
			ps = append(ps, fmt.Sprintf("%s (%s): %s", n.ID, n.Role, strings.Join(why, "; ")))
		}
	}
	return ps
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// checksumProblems lists the tables whose checksums differ between
// nodes; sums maps node → table → checksum ("missing" when the table
// does not exist there).
func checksumProblems(nodes []string, sums map[string][]string) []string {
	var ps []string
	get := func(id string, s int) string {
		if len(sums[id]) > s {
			return sums[id][s]
		}
		return "?" // not read
	}
	for s := range numSchemas {
		var vals []string
		same := true
		for _, id := range nodes {
			v := get(id, s)
			if v == "?" || v != get(nodes[0], s) {
				same = false
			}
			vals = append(vals, id+"="+v)
		}
		if !same {
			ps = append(ps, fmt.Sprintf("CHECKSUM TABLE %s differs: %s", tableName(s), strings.Join(vals, " ")))
		}
	}
	return ps
}

// nodeData is what one node's database holds of the writers' rows.
type nodeData struct {
	ids      [numSchemas][]int64
	sums     []string
	readOnly bool
	errs     []string
}

// readNode reads the writers' ids, the tables' checksums and read_only
// from the database at addr.
func (c *cluster) readNode(ctx context.Context, addr string) nodeData {
	var d nodeData
	db, err := sql.Open("mysql", c.dsn(addr))
	if err != nil {
		d.errs = append(d.errs, err.Error())
		return d
	}
	defer db.Close()
	if err := db.QueryRowContext(ctx, "SELECT @@global.read_only").Scan(&d.readOnly); err != nil {
		d.errs = append(d.errs, fmt.Sprintf("read_only: %v", err))
		return d
	}
	for s := range numSchemas {
		ids, err := queryIDs(ctx, db, tableName(s))
		if err != nil {
			d.errs = append(d.errs, err.Error())
		}
		d.ids[s] = ids
	}
	var names []string
	for s := range numSchemas {
		names = append(names, tableName(s))
	}
	rows, err := db.QueryContext(ctx, "CHECKSUM TABLE "+strings.Join(names, ", "))
	if err != nil {
		d.errs = append(d.errs, fmt.Sprintf("CHECKSUM TABLE: %v", err))
		return d
	}
	defer rows.Close()
	for rows.Next() {
		var table string
		var sum sql.NullInt64
		if err := rows.Scan(&table, &sum); err != nil {
			d.errs = append(d.errs, fmt.Sprintf("CHECKSUM TABLE: %v", err))
			return d
		}
		v := "missing"
		if sum.Valid {
			v = fmt.Sprint(sum.Int64)
		}
		d.sums = append(d.sums, v)
	}
	if err := rows.Err(); err != nil {
		d.errs = append(d.errs, fmt.Sprintf("CHECKSUM TABLE: %v", err))
	}
	return d
}

func queryIDs(ctx context.Context, db *sql.DB, table string) ([]int64, error) {
	rows, err := db.QueryContext(ctx, "SELECT id FROM "+table+" ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return ids, fmt.Errorf("read %s: %w", table, err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return ids, fmt.Errorf("read %s: %w", table, err)
	}
	return ids, nil
}

// checkResult is one evaluation of the convergence conditions.
type checkResult struct {
	problems []string
	// bad names the nodes that have a problem (for the log tails).
	bad map[string]bool
	st  *clusterStatus
}

// check evaluates every convergence condition once: quire status shows
// every node healthy, every acknowledged id is on every node, the tables'
// checksums are equal, and only the primary is writable.
func (h *harness) check(ctx context.Context, acked [numSchemas][]int64) checkResult {
	r := checkResult{bad: map[string]bool{}}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	st, err := h.c.fetchStatus(ctx)
	if err != nil {
		r.problems = append(r.problems, err.Error())
	} else {
		r.st = st
		for _, p := range statusProblems(st) {
			r.problems = append(r.problems, p)
			r.bad[strings.SplitN(p, " ", 2)[0]] = true
		}
	}
	total := 0
	for s := range numSchemas {
		total += len(acked[s])
	}
	sums := map[string][]string{}
	var ids []string
	for _, n := range h.c.nodes {
		ids = append(ids, n.ID)
		d := h.c.readNode(ctx, n.MySQL)
		for _, e := range d.errs {
			r.problems = append(r.problems, fmt.Sprintf("%s: %s", n.ID, e))
			r.bad[n.ID] = true
		}
		sums[n.ID] = d.sums
		var miss int
		var detail []string
		for s := range numSchemas {
			m, sample := missingIDs(acked[s], d.ids[s], 3)
			if m == 0 {
				continue
			}
			miss += m
			var ex []string
			for _, id := range sample {
				ex = append(ex, describeID(id))
			}
			detail = append(detail, fmt.Sprintf("%s: %d, e.g. %s", tableName(s), m, strings.Join(ex, ", ")))
		}
		if miss > 0 {
			r.problems = append(r.problems, fmt.Sprintf("%s: %d of %d acknowledged ids missing (%s)", n.ID, miss, total, strings.Join(detail, "; ")))
			r.bad[n.ID] = true
		}
		if st != nil && len(d.errs) == 0 {
			switch {
			case n.ID == st.Primary && d.readOnly:
				r.problems = append(r.problems, fmt.Sprintf("%s: the primary is read_only=ON", n.ID))
				r.bad[n.ID] = true
			case n.ID != st.Primary && !d.readOnly:
				r.problems = append(r.problems, fmt.Sprintf("%s: a replica is writable (read_only=OFF)", n.ID))
				r.bad[n.ID] = true
			}
		}
	}
	slices.Sort(ids)
	r.problems = append(r.problems, checksumProblems(ids, sums)...)
	return r
}
