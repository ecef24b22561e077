package apply

import (
	"encoding/binary"
	"hash/crc32"
	"strconv"

	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/quire-ha/quire/txlog"
)

// Synthetic binlog events for unit tests (MariaDB 10.11 layout, CRC32).

const synthServerID = 7

func synthEvent(t replication.EventType, body []byte) []byte {
	size := eventHeaderLen + len(body) + checksumLen
	b := make([]byte, eventHeaderLen, size)
	binary.LittleEndian.PutUint32(b[0:], 1700000000)
	b[4] = byte(t)
	binary.LittleEndian.PutUint32(b[5:], synthServerID)
	binary.LittleEndian.PutUint32(b[9:], uint32(size))
	b = append(b, body...)
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

func synthFDE() []byte {
	body := binary.LittleEndian.AppendUint16(nil, 4)
	ver := make([]byte, 50)
	copy(ver, "10.11.19-MariaDB-log")
	body = append(body, ver...)
	body = binary.LittleEndian.AppendUint32(body, 0)
	body = append(body, eventHeaderLen)
	post := make([]byte, 168)
	post[replication.QUERY_EVENT-1] = 13
	post[replication.TABLE_MAP_EVENT-1] = 8
	for _, t := range []replication.EventType{replication.WRITE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv1} {
		post[t-1] = 8
	}
	post[replication.MARIADB_GTID_EVENT-1] = 19
	body = append(body, post...)
	body = append(body, byte(replication.BINLOG_CHECKSUM_ALG_CRC32))
	return synthEvent(replication.FORMAT_DESCRIPTION_EVENT, body)
}

func synthGTID(seq uint64, flags byte) []byte {
	body := binary.LittleEndian.AppendUint64(nil, seq)
	body = binary.LittleEndian.AppendUint32(body, 0)
	body = append(body, flags)
	body = append(body, make([]byte, 6)...)
	return synthEvent(replication.MARIADB_GTID_EVENT, body)
}

func synthTableMap(id uint64, schema, table string) []byte {
	body := make([]byte, 6)
	putUint48(body, id)
	body = append(body, 0, 0)
	body = append(body, byte(len(schema)))
	body = append(body, schema...)
	body = append(body, 0, byte(len(table)))
	body = append(body, table...)
	body = append(body, 0, 1, byte(3), 0, 0) // one INT column, no metadata, null bitmap
	return synthEvent(replication.TABLE_MAP_EVENT, body)
}

func synthRows(id uint64, stmtEnd bool) []byte {
	body := make([]byte, 6)
	putUint48(body, id)
	var fl uint16
	if stmtEnd {
		fl = rowsStmtEnd
	}
	body = binary.LittleEndian.AppendUint16(body, fl)
	body = append(body, 1, 0xff, 0) // 1 column, bitmap, null bitmap
	body = binary.LittleEndian.AppendUint32(body, 42)
	return synthEvent(replication.WRITE_ROWS_EVENTv1, body)
}

func synthQuery(db, query string, status []byte) []byte {
	body := binary.LittleEndian.AppendUint32(nil, 99) // thread id
	body = binary.LittleEndian.AppendUint32(body, 0)  // exec time
	body = append(body, byte(len(db)))
	body = binary.LittleEndian.AppendUint16(body, 0) // error code
	body = binary.LittleEndian.AppendUint16(body, uint16(len(status)))
	body = append(body, status...)
	body = append(body, db...)
	body = append(body, 0)
	body = append(body, query...)
	return synthEvent(replication.QUERY_EVENT, body)
}

func synthXID() []byte {
	return synthEvent(replication.XID_EVENT, binary.LittleEndian.AppendUint64(nil, 5))
}

func putUint48(b []byte, v uint64) {
	for i := range 6 {
		b[i] = byte(v >> (8 * i))
	}
}

func concat(evs ...[]byte) []byte {
	var out []byte
	for _, e := range evs {
		out = append(out, e...)
	}
	return out
}

// synthDML is a transactional row-based record on the given schemas.
func synthDML(seq uint64, schemas ...string) txlog.Record {
	evs := [][]byte{synthGTID(seq, gtidTransactional|8)}
	for i, s := range schemas {
		evs = append(evs, synthTableMap(uint64(i+1), s, "t"), synthRows(uint64(i+1), true))
	}
	evs = append(evs, synthXID())
	var flags txlog.Flags
	if len(schemas) > 1 {
		flags |= txlog.FlagMultiSchema
	}
	return txlog.Record{
		Seqno: seq, Epoch: 1, GTID: "0-7-" + strconv.FormatUint(seq, 10), ServerID: synthServerID, Timestamp: 1700000000,
		Schemas: schemas, Flags: flags, FormatDesc: synthFDE(), Events: concat(evs...),
	}
}
