package apply

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/quire-ha/quire/txlog"
)

// packet is one COM_QUERY the applier sends: one or more statements.
type packet struct {
	sql string
	// expectErr is the MariaDB error number the (single) statement ended
	// with on the source; the same error on the replica is success.
	expectErr uint16
}

// packer groups statements into as few packets as the size limit allows,
// and rows events into as few BINLOG statements as possible.
type packer struct {
	max     int // bytes per packet
	out     []packet
	cur     strings.Builder
	rowsBuf [][]byte
	rowsLen int
}

func newPacker(max int) *packer { return &packer{max: max} }

// maxRows is the raw size after which a BINLOG statement is cut at the next
// statement end (base64 grows it by a third).
func (p *packer) maxRows() int { return p.max/4*3 - 64 }

// add appends a statement to the current packet.
func (p *packer) add(stmt string) {
	p.flushRows()
	p.addNow(stmt)
}

func (p *packer) addNow(stmt string) {
	if p.cur.Len() > 0 && p.cur.Len()+2+len(stmt) > p.max {
		p.flushPacket()
	}
	if p.cur.Len() > 0 {
		p.cur.WriteString(";\n")
	}
	p.cur.WriteString(stmt)
}

// alone sends stmt (a statement text taken from the binlog) in a packet of
// its own, so nothing else in the packet depends on how it parses.
func (p *packer) alone(stmt string, expectErr uint16) {
	p.flushRows()
	p.flushPacket()
	p.out = append(p.out, packet{sql: stmt, expectErr: expectErr})
}

// rows queues TABLE_MAP and rows events for BINLOG statements.
func (p *packer) rows(events [][]byte, stmtEnd []bool) {
	for i, e := range events {
		p.rowsBuf = append(p.rowsBuf, e)
		p.rowsLen += len(e)
		if stmtEnd[i] && p.rowsLen >= p.maxRows() {
			p.flushRows()
		}
	}
}

// flushRows turns the queued events into a BINLOG statement, which ends
// its packet: MariaDB 10.11 answers a BINLOG statement without the
// more-results flag, so the client would not read the results of any
// statement after it in the same packet.
func (p *packer) flushRows() {
	if len(p.rowsBuf) == 0 {
		return
	}
	p.addNow(binlogStatement(p.rowsBuf...))
	p.flushPacket()
	p.rowsBuf, p.rowsLen = nil, 0
}

func (p *packer) flushPacket() {
	if p.cur.Len() > 0 {
		p.out = append(p.out, packet{sql: p.cur.String()})
		p.cur.Reset()
	}
}

// packets returns everything added so far.
func (p *packer) packets() []packet {
	p.flushRows()
	p.flushPacket()
	return p.out
}

// sessionSQL prepares an applier session. The sql_mode is also restored
// after every statement replayed from the binlog, so the applier's own
// statements always parse the same way.
const (
	ownSQLMode = "SET @@session.sql_mode='NO_ENGINE_SUBSTITUTION'"
	sessionSQL = "SET NAMES utf8mb4;\nSET @@session.binlog_annotate_row_events=0, @@session.sql_log_bin=1, " +
		"@@session.sql_mode='NO_ENGINE_SUBSTITUTION', @@session.time_zone=DEFAULT"
)

// gtidSQL makes the next transaction of the session carry the source GTID.
func gtidSQL(g gtid, ts uint32) string {
	return fmt.Sprintf("SET @@session.gtid_domain_id=%d, @@session.server_id=%d, @@session.gtid_seq_no=%d, TIMESTAMP=%d",
		g.domain, g.server, g.seq, ts)
}

// guardMessage is the text of the error the restart-row guard raises.
const guardMessage = "quire: restart row guard: the restart row is already at or past this transaction"

// table is the restart-row table.
func table(schema string) string { return quoteIdent(schema) + ".`apply_channel`" }

// rowValues renders the SET list that records rec as applied.
func rowValues(rec *txlog.Record, shard string) string {
	ts := "NULL"
	if rec.Timestamp > 0 {
		ts = "FROM_UNIXTIME(" + strconv.FormatUint(uint64(rec.Timestamp), 10) + ")"
	}
	return fmt.Sprintf("epoch=%d, seqno=%d, source_gtid=%s, source_file=%s, source_pos=%d, shard=%s, source_ts=%s, applied_at=SYSDATE(6)",
		rec.Epoch, rec.Seqno, sqlString(rec.GTID), sqlString(rec.SourceFile), rec.SourcePos, sqlString(shard), ts)
}

// guardSQL advances restart rows to last, failing with guardMessage unless
// exactly the expected rows were behind first: the channel's own row, or for
// channel SerialChannel every one of the n rows. Run first in a transaction,
// it also locks the rows, so a leftover session still committing the same
// records makes it wait and then fail instead of applying them twice.
func guardSQL(schema string, channel, n int, first uint64, last *txlog.Record, shard string) string {
	where := fmt.Sprintf("channel_id=%d AND seqno<%d", channel, first)
	want := 1
	if channel == SerialChannel {
		where = fmt.Sprintf("seqno<%d", first)
		want = n
	}
	return fmt.Sprintf("BEGIN NOT ATOMIC UPDATE %s SET %s WHERE %s; IF ROW_COUNT()<>%d THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT='%s'; END IF; END",
		table(schema), rowValues(last, shard), where, want, guardMessage)
}

// createSQL creates the restart-row table. It runs with sql_log_bin=0: the
// applier's bookkeeping must not consume a GTID of its own.
func createSQL(schema string) []string {
	return []string{
		"CREATE DATABASE IF NOT EXISTS " + quoteIdent(schema),
		"CREATE TABLE IF NOT EXISTS " + table(schema) + ` (
  channel_id INT UNSIGNED NOT NULL PRIMARY KEY,
  channel_count INT UNSIGNED NOT NULL,
  layout VARCHAR(64) NOT NULL DEFAULT '',
  epoch BIGINT UNSIGNED NOT NULL DEFAULT 0,
  seqno BIGINT UNSIGNED NOT NULL DEFAULT 0,
  source_gtid VARCHAR(64) NOT NULL DEFAULT '',
  source_file VARCHAR(255) NOT NULL DEFAULT '',
  source_pos BIGINT UNSIGNED NOT NULL DEFAULT 0,
  shard VARCHAR(255) NOT NULL DEFAULT '',
  source_ts TIMESTAMP NULL DEFAULT NULL,
  applied_at TIMESTAMP(6) NULL DEFAULT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
	}
}

// resetSQL replaces all restart rows by n rows at base (one transaction).
func resetSQL(schema string, n int, layout string, base RestartRow) []string {
	stmts := []string{"START TRANSACTION", "DELETE FROM " + table(schema)}
	ts := "NULL"
	if !base.SourceTime.IsZero() {
		ts = "FROM_UNIXTIME(" + strconv.FormatInt(base.SourceTime.Unix(), 10) + ")"
	}
	var vals []string
	for i := range n {
		vals = append(vals, fmt.Sprintf("(%d, %d, %s, %d, %d, %s, %s, %d, %s, %s, SYSDATE(6))",
			i, n, sqlString(layout), base.Epoch, base.Seqno, sqlString(base.GTID), sqlString(base.SourceFile),
			base.SourcePos, sqlString(base.Shard), ts))
	}
	stmts = append(stmts,
		"INSERT INTO "+table(schema)+" (channel_id, channel_count, layout, epoch, seqno, source_gtid, source_file, source_pos, shard, source_ts, applied_at) VALUES "+strings.Join(vals, ", "),
		"COMMIT")
	return stmts
}
