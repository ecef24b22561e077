package binlog

import (
	"encoding/binary"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"
)

// BenchmarkDecodeAssemble measures the CPU cost of the reader's per-event
// work (CRC32 check, header and body decoding, grouping) on a synthetic
// stream of small row transactions: GTID, BEGIN, table map, rows, XID.
//
//	go test ./binlog/ -run '^$' -bench DecodeAssemble -benchtime 200000x
func BenchmarkDecodeAssemble(b *testing.B) {
	s := newStream("binlog.000001")
	for i := range 1000 {
		s.add(replication.MARIADB_GTID_EVENT, 0, gtidBody(uint64(i+1), 0, 0))
		s.add(replication.QUERY_EVENT, 0, queryBody("s1", "BEGIN"))
		s.add(replication.TABLE_MAP_EVENT, 0, tableMapBody(42, "s1", "t"))
		s.add(replication.WRITE_ROWS_EVENTv1, 0, append(rowsBody(42), make([]byte, 150)...))
		s.add(replication.XID_EVENT, 0, binary.LittleEndian.AppendUint64(nil, uint64(i)))
	}
	var bytes int64
	for _, e := range s.events[2:] {
		bytes += int64(len(e))
	}
	b.SetBytes(bytes / int64(len(s.events)-2))
	b.ReportAllocs()
	d := newDecoder(true)
	a := newAssembler(1 << 30)
	for _, raw := range s.events[:2] {
		ev, _ := d.decode(raw)
		a.add(ev)
	}
	body := s.events[2:]
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev, err := d.decode(body[i%len(body)])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := a.add(ev); err != nil {
			b.Fatal(err)
		}
	}
}
