package binlog

import (
	"fmt"
	"slices"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/quire-ha/quire/txlog"
)

// MariaDB GTID event flags (flags2 of Gtid_log_event) beyond go-mysql's.
const (
	gtidFlagPreparedXA  = 64
	gtidFlagCompletedXA = 128
)

// assembler groups events into transactions. It is the pure part of a
// Source: no I/O, no numbering. Feed it the events of a dump in order with
// add; it returns a record (without Seqno and Epoch) for each complete
// transaction. After a broken dump, call reset before feeding the next.
type assembler struct {
	maxTx int64

	fde []byte // normalized format-description event in effect

	inTx       bool
	gtid       string
	serverID   uint32
	standalone bool
	events     []byte
	schemas    map[string]struct{}
	flags      txlog.Flags
	start      Position // where the GTID event ended (for messages)
}

func newAssembler(maxTx int64) *assembler {
	return &assembler{maxTx: maxTx, schemas: make(map[string]struct{})}
}

// reset forgets a transaction in progress and the format description.
func (a *assembler) reset() {
	a.fde = nil
	a.clearTx()
}

func (a *assembler) clearTx() {
	a.inTx = false
	a.gtid = ""
	a.serverID = 0
	a.standalone = false
	a.events = a.events[:0]
	clear(a.schemas)
	a.flags = 0
	a.start = Position{}
	// Do not keep a huge buffer after a huge transaction.
	if cap(a.events) > 4<<20 {
		a.events = nil
	}
}

// add takes the next event. It returns a record when ev completes a
// transaction, nil otherwise.
func (a *assembler) add(ev *Event) (*txlog.Record, error) {
	h := &ev.Header
	switch h.EventType {
	case replication.FORMAT_DESCRIPTION_EVENT:
		if a.inTx {
			return nil, fmt.Errorf("%w: format description event at %s inside transaction %s", ErrProtocol, ev.Pos(), a.gtid)
		}
		fde, _ := ev.Data.(*replication.FormatDescriptionEvent)
		hasCRC := fde != nil && fde.ChecksumAlgorithm == replication.BINLOG_CHECKSUM_ALG_CRC32
		a.fde = normalizeFDE(ev.Raw, hasCRC)
		return nil, nil
	case replication.ROTATE_EVENT:
		if a.inTx {
			return nil, fmt.Errorf("%w: rotate event in %s inside transaction %s", ErrProtocol, ev.File, a.gtid)
		}
		return nil, nil
	case replication.HEARTBEAT_EVENT, replication.HEARTBEAT_LOG_EVENT_V2,
		replication.MARIADB_GTID_LIST_EVENT, replication.MARIADB_BINLOG_CHECKPOINT_EVENT,
		replication.MARIADB_START_ENCRYPTION_EVENT, replication.STOP_EVENT,
		replication.MARIADB_ANNOTATE_ROWS_EVENT, replication.PREVIOUS_GTIDS_EVENT:
		// Not part of any transaction. Annotate-rows events (the original
		// SQL of row events) are not requested from the source and are
		// dropped if one arrives anyway: the applier cannot replay them
		// in a BINLOG statement.
		return nil, nil
	case replication.MARIADB_GTID_EVENT:
		if a.inTx {
			return nil, fmt.Errorf("%w: transaction %s starting at %s has no commit event before the next GTID event at %s", ErrProtocol, a.gtid, a.start, ev.Pos())
		}
		g, ok := ev.Data.(*replication.MariadbGTIDEvent)
		if !ok {
			return nil, fmt.Errorf("%w: GTID event at %s not decoded", ErrProtocol, ev.Pos())
		}
		if a.fde == nil {
			return nil, fmt.Errorf("%w: GTID event at %s before any format description event", ErrProtocol, ev.Pos())
		}
		a.inTx = true
		a.gtid = fmt.Sprintf("%d-%d-%d", g.GTID.DomainID, h.ServerID, g.GTID.SequenceNumber)
		a.serverID = h.ServerID
		a.standalone = g.IsStandalone()
		a.start = ev.Pos()
		if g.IsDDL() {
			a.flags |= txlog.FlagDDL
		}
		if g.Flags&(gtidFlagPreparedXA|gtidFlagCompletedXA) != 0 {
			// XA groups are split in two records (prepare, commit):
			// neither can be attributed to one schema on its own.
			a.flags |= txlog.FlagUnknownSchema
		}
		return nil, a.appendEvent(ev)
	}

	if !a.inTx {
		return nil, fmt.Errorf("%w: %s event ending at %s outside a transaction (did the dump start inside one?)", ErrProtocol, h.EventType, ev.Pos())
	}
	if err := a.appendEvent(ev); err != nil {
		return nil, err
	}
	end := false
	switch e := ev.Data.(type) {
	case *replication.XIDEvent:
		end = true
	case *replication.TableMapEvent:
		a.schemas[string(e.Schema)] = struct{}{}
	case *replication.QueryEvent:
		db, q := string(e.Schema), string(e.Query)
		switch classifyQuery(q) {
		case queryBegin, querySavepoint:
		case queryCommit, queryRollback:
			end = true
		case queryXA:
			a.flags |= txlog.FlagUnknownSchema
		case queryXAEnd:
			a.flags |= txlog.FlagUnknownSchema
			end = true
		default:
			a.flags |= txlog.FlagDDL
			if db != "" {
				a.schemas[db] = struct{}{}
			}
			if !statementInSchema(db, q) {
				a.flags |= txlog.FlagUnknownSchema
			}
		}
		// A standalone group (DDL, no BEGIN/COMMIT) is one query.
		if a.standalone {
			end = true
		}
	case *replication.RowsEvent, *replication.IntVarEvent:
	default:
		switch h.EventType {
		case replication.XA_PREPARE_LOG_EVENT:
			a.flags |= txlog.FlagUnknownSchema
			end = true
		case replication.RAND_EVENT, replication.USER_VAR_EVENT:
			// Session context of the next query.
		default:
			// Something we cannot attribute (LOAD DATA blocks, unknown
			// event types): keep it, and serialize the transaction.
			a.flags |= txlog.FlagUnknownSchema
		}
	}
	if !end {
		return nil, nil
	}
	rec := a.record(ev)
	a.clearTx()
	return rec, nil
}

// appendEvent adds the raw event to the transaction, within maxTx.
func (a *assembler) appendEvent(ev *Event) error {
	if int64(len(a.events))+int64(len(ev.Raw)) > a.maxTx {
		return fmt.Errorf("binlog: transaction %s starting at %s: %w: more than %d bytes of events (Config.MaxTxSize; raise it or split the transaction)",
			a.gtid, a.start, ErrTxTooLarge, a.maxTx)
	}
	if ev.Header.LogPos == 0 {
		return fmt.Errorf("%w: %s event in transaction %s has no log position", ErrProtocol, ev.Header.EventType, a.gtid)
	}
	a.events = append(a.events, ev.Raw...)
	return nil
}

// record builds the record of the transaction that last ends.
func (a *assembler) record(last *Event) *txlog.Record {
	schemas := make([]string, 0, len(a.schemas))
	for s := range a.schemas {
		schemas = append(schemas, s)
	}
	slices.Sort(schemas)
	flags := a.flags
	if len(schemas) > 1 {
		flags |= txlog.FlagMultiSchema
	}
	return &txlog.Record{
		GTID:       a.gtid,
		SourceFile: last.File,
		SourcePos:  uint64(last.Header.LogPos),
		ServerID:   a.serverID,
		Timestamp:  last.Header.Timestamp,
		Schemas:    schemas,
		Flags:      flags,
		FormatDesc: slices.Clone(a.fde),
		Events:     a.takeEvents(),
	}
}

// takeEvents hands the event buffer over to a record.
func (a *assembler) takeEvents() []byte {
	b := a.events
	a.events = nil
	return b
}
