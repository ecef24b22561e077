package apply

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/quire-ha/quire/txlog"
)

// gtid is a MariaDB GTID, domain-server-sequence.
type gtid struct {
	domain, server uint32
	seq            uint64
}

func (g gtid) String() string { return fmt.Sprintf("%d-%d-%d", g.domain, g.server, g.seq) }

// parseGTID parses "domain-server-sequence".
func parseGTID(s string) (gtid, error) {
	parts := strings.Split(s, "-")
	if len(parts) != 3 {
		return gtid{}, fmt.Errorf("GTID %q: want domain-server-sequence", s)
	}
	d, err1 := strconv.ParseUint(parts[0], 10, 32)
	sv, err2 := strconv.ParseUint(parts[1], 10, 32)
	q, err3 := strconv.ParseUint(parts[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return gtid{}, fmt.Errorf("GTID %q: %w", s, err)
	}
	return gtid{domain: uint32(d), server: uint32(sv), seq: q}, nil
}

type stepKind int

const (
	stepRows   stepKind = iota // TABLE_MAP and rows events, replayed with BINLOG
	stepQuery                  // one statement with its session context
	stepCommit                 // end of the event group (XID or COMMIT)
)

// step is one part of a record's replay.
type step struct {
	kind stepKind
	// stepRows: the raw events; a BINLOG statement may end after events[i]
	// when stmtEnd[i] is set (the server drops table maps there).
	events  [][]byte
	stmtEnd []bool
	size    int
	// stepQuery: SET and USE statements that recreate the source session,
	// the statement text, and the error the statement ended with on the
	// source (0 for none).
	context string
	query   string
	errCode uint16
}

// plan is a record translated for replay.
type plan struct {
	rec   *txlog.Record
	gtid  gtid
	flags byte // GTID event flags
	// atomic: the record is one transactional event group without DDL, so
	// it can run inside a transaction together with its restart-row update.
	atomic bool
	ddl    bool
	steps  []step
	size   int
}

// parts returns how many binlog event groups a non-atomic replay of the
// plan writes: one, plus one per data step after a DDL statement (CREATE
// TABLE ... SELECT logs the CREATE and then the rows).
func (p *plan) parts() int {
	n, afterDDL := 1, false
	for _, s := range p.steps {
		switch {
		case s.kind == stepQuery && p.ddl:
			if afterDDL {
				n++
			}
			afterDDL = true
		case s.kind == stepRows || s.kind == stepQuery:
			if afterDDL {
				n++
				afterDDL = false
			}
		}
	}
	return n
}

// translate turns a record into replay steps. own is the applier's schema,
// which no record may touch.
func translate(rec *txlog.Record, f *format, own string) (*plan, error) {
	for _, s := range rec.Schemas {
		if s == own {
			return nil, fmt.Errorf("record touches schema %s, which holds the applier's restart rows", own)
		}
	}
	evs, err := splitEvents(rec.Events, f)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 || evs[0].typ != replication.MARIADB_GTID_EVENT {
		return nil, errors.New("events do not start with a MariaDB GTID event")
	}
	ge, err := parseGTIDEvent(evs[0])
	if err != nil {
		return nil, err
	}
	g, err := parseGTID(rec.GTID)
	if err != nil {
		return nil, err
	}
	if g != (gtid{ge.domain, ge.server, ge.seq}) {
		return nil, fmt.Errorf("record GTID %s differs from its GTID event %d-%d-%d", rec.GTID, ge.domain, ge.server, ge.seq)
	}
	if ge.flags&(gtidPreparedXA|gtidCompletedXA) != 0 {
		return nil, errors.New("XA transactions are not supported")
	}
	p := &plan{
		rec:   rec,
		gtid:  g,
		flags: ge.flags,
		ddl:   ge.flags&gtidDDL != 0,
	}
	p.atomic = ge.flags&gtidTransactional != 0 && ge.flags&(gtidDDL|gtidStandalone) == 0

	parser := replication.NewBinlogParser()
	parser.SetFlavor("mariadb")
	if _, err := parser.Parse(f.raw); err != nil {
		return nil, fmt.Errorf("format description event: %w", err)
	}
	var pre []string // SET statements from INTVAR and RAND events, for the next statement
	for i, ev := range evs[1:] {
		switch {
		case ev.typ == replication.MARIADB_ANNOTATE_ROWS_EVENT:
			// Informational; the applier session does not write its own.
		case ev.typ == replication.TABLE_MAP_EVENT || isRowsEvent(ev.typ):
			if ev.typ == replication.TABLE_MAP_EVENT {
				schema, _, err := tableMapSchema(ev, f)
				if err != nil {
					return nil, err
				}
				if schema == own {
					return nil, fmt.Errorf("record writes a table in schema %s, which holds the applier's restart rows", own)
				}
			}
			if n := len(p.steps); n == 0 || p.steps[n-1].kind != stepRows {
				p.steps = append(p.steps, step{kind: stepRows})
			}
			s := &p.steps[len(p.steps)-1]
			end := false
			if isRowsEvent(ev.typ) {
				fl, err := rowsFlags(ev, f)
				if err != nil {
					return nil, err
				}
				end = fl&rowsStmtEnd != 0
			}
			s.events = append(s.events, ev.raw)
			s.stmtEnd = append(s.stmtEnd, end)
			s.size += len(ev.raw)
		case ev.typ == replication.QUERY_EVENT:
			e, err := parser.Parse(ev.raw)
			if err != nil {
				return nil, fmt.Errorf("event %d (QUERY): %w", i+1, err)
			}
			q := e.Event.(*replication.QueryEvent)
			text := string(q.Query)
			switch {
			case text == "BEGIN":
				// The GTID event already opened the group.
			case text == "COMMIT":
				p.steps = append(p.steps, step{kind: stepCommit})
			case text == "ROLLBACK" || hasPrefixFold(text, "XA "):
				return nil, fmt.Errorf("statement %q in the event group is not supported", text)
			default:
				if string(q.Schema) == own {
					return nil, fmt.Errorf("statement runs in schema %s, which holds the applier's restart rows", own)
				}
				ctx, err := queryContext(ev, q, pre)
				if err != nil {
					return nil, fmt.Errorf("event %d (QUERY): %w", i+1, err)
				}
				p.steps = append(p.steps, step{kind: stepQuery, context: ctx, query: text, errCode: q.ErrorCode, size: len(ev.raw)})
				pre = nil
			}
		case ev.typ == replication.INTVAR_EVENT:
			e, err := parser.Parse(ev.raw)
			if err != nil {
				return nil, fmt.Errorf("event %d (INTVAR): %w", i+1, err)
			}
			iv := e.Event.(*replication.IntVarEvent)
			switch iv.Type {
			case replication.LAST_INSERT_ID:
				pre = append(pre, "LAST_INSERT_ID="+strconv.FormatUint(iv.Value, 10))
			case replication.INSERT_ID:
				pre = append(pre, "INSERT_ID="+strconv.FormatUint(iv.Value, 10))
			default:
				return nil, fmt.Errorf("event %d: INTVAR type %d is not supported", i+1, iv.Type)
			}
		case ev.typ == replication.RAND_EVENT:
			if len(ev.body) < 16 {
				return nil, fmt.Errorf("event %d: RAND event too short", i+1)
			}
			pre = append(pre,
				"@@RAND_SEED1="+strconv.FormatUint(binary.LittleEndian.Uint64(ev.body), 10),
				"@@RAND_SEED2="+strconv.FormatUint(binary.LittleEndian.Uint64(ev.body[8:]), 10))
		case ev.typ == replication.XID_EVENT:
			p.steps = append(p.steps, step{kind: stepCommit})
		case isCompressed(ev.typ):
			return nil, fmt.Errorf("event %d is a compressed %v event: the BINLOG statement rejects compressed events; set log_bin_compress=OFF on the source", i+1, ev.typ)
		case ev.typ == replication.USER_VAR_EVENT:
			return nil, fmt.Errorf("event %d is a USER_VAR event (statement-based logging); the source must use binlog_format=ROW", i+1)
		default:
			return nil, fmt.Errorf("event %d: unexpected %v event in a transaction", i+1, ev.typ)
		}
	}
	if len(pre) > 0 {
		return nil, errors.New("INTVAR or RAND event without a following statement")
	}
	for i, s := range p.steps {
		if s.kind == stepCommit && i != len(p.steps)-1 {
			return nil, errors.New("event group continues after its commit")
		}
		p.size += s.size
	}
	if p.atomic {
		if n := len(p.steps); n == 0 || p.steps[n-1].kind != stepCommit {
			return nil, errors.New("transactional event group does not end in a commit (XID or COMMIT)")
		}
		p.steps = p.steps[:len(p.steps)-1]
	}
	return p, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// Bits of the Q_FLAGS2 status variable (MariaDB 10.11 sql_priv.h).
const (
	flags2AutoIsNull          = 1 << 14
	flags2NoCheckConstraints  = 1 << 15
	flags2ExplicitDefTS       = 1 << 24
	flags2NoForeignKeyChecks  = 1 << 26
	flags2RelaxedUniqueChecks = 1 << 27
	flags2IfExists            = 1 << 28
	flags2InsertHistory       = 1 << 30
)

// Query status variable codes (MariaDB 10.11 log_event.h).
const (
	qFlags2          = 0
	qSQLMode         = 1
	qCatalog         = 2
	qAutoIncrement   = 3
	qCharset         = 4
	qTimeZone        = 5
	qCatalogNZ       = 6
	qLCTimeNames     = 7
	qCharsetDatabase = 8
	qTableMapForUpd  = 9
	qMasterDataWrite = 10
	qInvoker         = 11
	qHRNow           = 128
	qXID             = 129
	qGTIDFlags3      = 130

	// Q_GTID_FLAGS3 bits of two-phase ALTER (binlog_alter_two_phase).
	flags3StartAlter    = 2
	flags3CommitAlter   = 4
	flags3RollbackAlter = 8
)

// statusVars are the session settings a QUERY event carries.
type statusVars struct {
	flags2                 uint32
	hasFlags2              bool
	sqlMode                uint64
	hasSQLMode             bool
	autoIncInc, autoIncOff uint16
	hasAutoInc             bool
	charset                [3]uint16 // character_set_client, collation_connection, collation_server
	hasCharset             bool
	timeZone               string
	hasTimeZone            bool
	lcTimeNames            uint16
	hasLCTimeNames         bool
	collationDB            uint16
	hasCollationDB         bool
	usec                   uint32
	hasUsec                bool
	flags3                 byte
}

// parseStatusVars decodes a QUERY event's status variables. Like the server,
// it stops at the first code it does not know (codes are written in
// increasing order).
func parseStatusVars(b []byte) (statusVars, error) {
	var v statusVars
	need := func(p, n int) error {
		if p+n > len(b) {
			return fmt.Errorf("status variable %d truncated", b[p-1])
		}
		return nil
	}
	for p := 0; p < len(b); {
		code := b[p]
		p++
		switch code {
		case qFlags2:
			if err := need(p, 4); err != nil {
				return v, err
			}
			v.flags2, v.hasFlags2 = binary.LittleEndian.Uint32(b[p:]), true
			p += 4
		case qSQLMode:
			if err := need(p, 8); err != nil {
				return v, err
			}
			v.sqlMode, v.hasSQLMode = binary.LittleEndian.Uint64(b[p:]), true
			p += 8
		case qCatalog:
			if err := need(p, 1); err != nil {
				return v, err
			}
			n := int(b[p])
			if err := need(p, n+2); err != nil {
				return v, err
			}
			p += n + 2
		case qAutoIncrement:
			if err := need(p, 4); err != nil {
				return v, err
			}
			v.autoIncInc = binary.LittleEndian.Uint16(b[p:])
			v.autoIncOff = binary.LittleEndian.Uint16(b[p+2:])
			v.hasAutoInc = true
			p += 4
		case qCharset:
			if err := need(p, 6); err != nil {
				return v, err
			}
			for i := range v.charset {
				v.charset[i] = binary.LittleEndian.Uint16(b[p+2*i:])
			}
			v.hasCharset = true
			p += 6
		case qTimeZone, qCatalogNZ:
			if err := need(p, 1); err != nil {
				return v, err
			}
			n := int(b[p])
			if err := need(p, n+1); err != nil {
				return v, err
			}
			if code == qTimeZone {
				v.timeZone, v.hasTimeZone = string(b[p+1:p+1+n]), true
			}
			p += n + 1
		case qLCTimeNames:
			if err := need(p, 2); err != nil {
				return v, err
			}
			v.lcTimeNames, v.hasLCTimeNames = binary.LittleEndian.Uint16(b[p:]), true
			p += 2
		case qCharsetDatabase:
			if err := need(p, 2); err != nil {
				return v, err
			}
			v.collationDB, v.hasCollationDB = binary.LittleEndian.Uint16(b[p:]), true
			p += 2
		case qTableMapForUpd, qXID:
			if err := need(p, 8); err != nil {
				return v, err
			}
			p += 8
		case qMasterDataWrite:
			if err := need(p, 4); err != nil {
				return v, err
			}
			p += 4
		case qInvoker:
			for range 2 { // user, host
				if err := need(p, 1); err != nil {
					return v, err
				}
				n := int(b[p])
				if err := need(p, n+1); err != nil {
					return v, err
				}
				p += n + 1
			}
		case qHRNow:
			if err := need(p, 3); err != nil {
				return v, err
			}
			v.usec, v.hasUsec = uint32(b[p])|uint32(b[p+1])<<8|uint32(b[p+2])<<16, true
			p += 3
		case qGTIDFlags3:
			if err := need(p, 1); err != nil {
				return v, err
			}
			v.flags3 = b[p]
			p++
			if v.flags3&(flags3CommitAlter|flags3RollbackAlter) != 0 {
				if err := need(p, 8); err != nil {
					return v, err
				}
				p += 8
			}
		default:
			return v, nil
		}
	}
	return v, nil
}

// queryContext builds the statements that recreate the source session of a
// QUERY event (as mariadb-binlog prints them): default database, timestamp,
// option flags, sql_mode, auto_increment, character sets, time zone,
// lc_time_names, database collation, and any INTVAR/RAND values.
func queryContext(ev rawEvent, q *replication.QueryEvent, pre []string) (string, error) {
	v, err := parseStatusVars(q.StatusVars)
	if err != nil {
		return "", err
	}
	if v.flags3&(flags3StartAlter|flags3CommitAlter|flags3RollbackAlter) != 0 {
		return "", errors.New("two-phase ALTER (binlog_alter_two_phase) is not supported; turn it off on the source")
	}
	var b strings.Builder
	if len(q.Schema) > 0 && ev.flags&replication.LOG_EVENT_SUPPRESS_USE_F == 0 {
		b.WriteString("USE " + quoteIdent(string(q.Schema)) + ";\n")
	}
	set := []string{"TIMESTAMP=" + strconv.FormatUint(uint64(ev.ts), 10)}
	if v.hasUsec {
		set[0] += fmt.Sprintf(".%06d", v.usec)
	}
	set = append(set, "@@session.pseudo_thread_id="+strconv.FormatUint(uint64(q.SlaveProxyID), 10))
	if v.hasFlags2 {
		f := v.flags2
		set = append(set,
			"@@session.foreign_key_checks="+bit(f&flags2NoForeignKeyChecks == 0),
			"@@session.sql_auto_is_null="+bit(f&flags2AutoIsNull != 0),
			"@@session.unique_checks="+bit(f&flags2RelaxedUniqueChecks == 0),
			"@@session.check_constraint_checks="+bit(f&flags2NoCheckConstraints == 0),
			"@@session.sql_if_exists="+bit(f&flags2IfExists != 0),
			"@@session.explicit_defaults_for_timestamp="+bit(f&flags2ExplicitDefTS != 0),
			"@@session.system_versioning_insert_history="+bit(f&flags2InsertHistory != 0))
	}
	if v.hasSQLMode {
		set = append(set, "@@session.sql_mode="+strconv.FormatUint(v.sqlMode, 10))
	}
	if v.hasAutoInc {
		set = append(set,
			"@@session.auto_increment_increment="+strconv.Itoa(int(v.autoIncInc)),
			"@@session.auto_increment_offset="+strconv.Itoa(int(v.autoIncOff)))
	}
	if v.hasCharset {
		// character_set_client takes a character set, not a collation id:
		// go through collation_connection to name it.
		b.WriteString("SET @@session.collation_connection=" + strconv.Itoa(int(v.charset[0])) + ";\n")
		set = append(set,
			"@@session.character_set_client=@@session.character_set_connection",
			"@@session.collation_connection="+strconv.Itoa(int(v.charset[1])),
			"@@session.collation_server="+strconv.Itoa(int(v.charset[2])))
	}
	if v.hasTimeZone {
		set = append(set, "@@session.time_zone="+sqlString(v.timeZone))
	} else {
		set = append(set, "@@session.time_zone=DEFAULT")
	}
	if v.hasLCTimeNames {
		set = append(set, "@@session.lc_time_names="+strconv.Itoa(int(v.lcTimeNames)))
	}
	if v.hasCollationDB {
		set = append(set, "@@session.collation_database="+strconv.Itoa(int(v.collationDB)))
	} else {
		set = append(set, "@@session.collation_database=DEFAULT")
	}
	set = append(set, pre...)
	b.WriteString("SET " + strings.Join(set, ", "))
	return b.String(), nil
}

func bit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// quoteIdent quotes a MariaDB identifier with backticks.
func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// sqlString renders s as a utf8mb4 hex literal, safe in any sql_mode and
// client character set.
func sqlString(s string) string { return "_utf8mb4 X'" + hex.EncodeToString([]byte(s)) + "'" }

// binlogStatement renders raw events as one BINLOG statement.
func binlogStatement(events ...[]byte) string {
	n := 0
	for _, e := range events {
		n += len(e)
	}
	raw := make([]byte, 0, n)
	for _, e := range events {
		raw = append(raw, e...)
	}
	var b strings.Builder
	b.Grow(base64.StdEncoding.EncodedLen(n) + 10)
	b.WriteString("BINLOG '")
	b.WriteString(base64.StdEncoding.EncodeToString(raw))
	b.WriteString("'")
	return b.String()
}
