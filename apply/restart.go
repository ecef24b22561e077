package apply

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"
)

// RestartRow is one row of the restart-row table: what one channel has
// applied. It is updated in the same database transaction as the data.
type RestartRow struct {
	Channel      int
	ChannelCount int
	// Layout fingerprints the shard-to-channel assignment that wrote the row
	// (ShardMap.Layout).
	Layout     string
	Epoch      uint64
	Seqno      uint64
	GTID       string
	SourceFile string
	SourcePos  uint64
	Shard      string
	SourceTime time.Time // zero when unknown
	AppliedAt  time.Time // zero when never
}

// queryer is what reading the rows needs of *sql.DB, *sql.Conn and *sql.Tx.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// ReadRestartRows returns the restart rows in schema, ordered by channel,
// or none if the table does not exist yet.
func ReadRestartRows(ctx context.Context, q queryer, schema string) ([]RestartRow, error) {
	rows, err := q.QueryContext(ctx, "SELECT channel_id, channel_count, layout, epoch, seqno, source_gtid, source_file, source_pos, shard, "+
		"UNIX_TIMESTAMP(source_ts), UNIX_TIMESTAMP(applied_at) FROM "+table(schema)+" ORDER BY channel_id")
	if err != nil {
		if isErrNo(err, 1146, 1049) { // no such table, no such database
			return nil, nil
		}
		return nil, fmt.Errorf("apply: read restart rows: %w", err)
	}
	defer rows.Close()
	var out []RestartRow
	for rows.Next() {
		var r RestartRow
		var src sql.NullInt64
		var applied sql.NullFloat64
		if err := rows.Scan(&r.Channel, &r.ChannelCount, &r.Layout, &r.Epoch, &r.Seqno, &r.GTID, &r.SourceFile, &r.SourcePos, &r.Shard, &src, &applied); err != nil {
			return nil, fmt.Errorf("apply: read restart rows: %w", err)
		}
		if src.Valid {
			r.SourceTime = time.Unix(src.Int64, 0)
		}
		if applied.Valid {
			r.AppliedAt = time.UnixMicro(int64(applied.Float64 * 1e6))
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("apply: read restart rows: %w", err)
	}
	return out, nil
}

// startPlan is where a run starts, decided from the restart rows.
type startPlan struct {
	// reset: replace the rows by fresh rows for the new channel count and
	// layout, all at base.
	reset bool
	base  RestartRow
	// seqnos holds, per channel, the seqno up to which the channel has
	// applied; it skips records up to it.
	seqnos []uint64
	// resume is the first seqno to read: min(seqnos)+1.
	resume uint64
}

// ErrDrainFirst is wrapped by the start error when the channel count or the
// shard layout changed while the restart rows are at different seqnos.
var ErrDrainFirst = errors.New("restart rows are not drained")

// planStart decides how a run of n channels with the given layout resumes
// from rows. Rows for another channel count or layout are only accepted when
// all are at the same seqno (after a drain); otherwise records could be
// applied twice or not at all.
func planStart(rows []RestartRow, n int, layout string) (startPlan, error) {
	if len(rows) == 0 {
		return startPlan{reset: true, seqnos: make([]uint64, n), resume: 1}, nil
	}
	sorted := append([]RestartRow(nil), rows...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Channel < sorted[j].Channel })
	count := sorted[0].ChannelCount
	same := true
	for i, r := range sorted {
		if r.Channel != i {
			return startPlan{}, fmt.Errorf("apply: restart rows: channel ids are not 0..%d (row %d has channel %d)", len(sorted)-1, i, r.Channel)
		}
		if r.ChannelCount != count || r.Layout != sorted[0].Layout {
			return startPlan{}, fmt.Errorf("apply: restart rows disagree on the channel count or layout (channel %d: %d channels, layout %q; channel 0: %d, %q)",
				r.Channel, r.ChannelCount, r.Layout, count, sorted[0].Layout)
		}
		if r.Seqno != sorted[0].Seqno {
			same = false
		}
	}
	if count != len(sorted) {
		return startPlan{}, fmt.Errorf("apply: restart rows: %d rows for channel count %d", len(sorted), count)
	}
	if count != n || sorted[0].Layout != layout {
		if !same {
			lo, hi := sorted[0].Seqno, sorted[0].Seqno
			for _, r := range sorted {
				lo, hi = min(lo, r.Seqno), max(hi, r.Seqno)
			}
			what := fmt.Sprintf("the channel count changed from %d to %d", count, n)
			if count == n {
				what = "the shard-to-channel layout changed"
			}
			return startPlan{}, fmt.Errorf("apply: %s, but the restart rows are at different seqnos (%d..%d): %w; run the drain with the old channel count (%d) and the old shard map first",
				what, lo, hi, ErrDrainFirst, count)
		}
		base := sorted[0]
		return startPlan{reset: true, base: base, seqnos: filled(n, base.Seqno), resume: base.Seqno + 1}, nil
	}
	p := startPlan{seqnos: make([]uint64, n)}
	lo := sorted[0].Seqno
	for i, r := range sorted {
		p.seqnos[i] = r.Seqno
		lo = min(lo, r.Seqno)
	}
	p.resume = lo + 1
	return p, nil
}

func filled(n int, v uint64) []uint64 {
	s := make([]uint64, n)
	for i := range s {
		s[i] = v
	}
	return s
}
