package semisync

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
)

// BinlogPosition is a position in the primary's binary log: the end of a
// transaction's last event. MariaDB's semi-sync ACK carries exactly this, and
// acknowledging a position acknowledges every transaction that ends at or
// before it.
type BinlogPosition struct {
	// File is the binlog file name, e.g. "mysql-bin.000042".
	File string
	// Pos is the byte offset just past the transaction's last event.
	Pos uint64
}

// String returns "file:pos".
func (p BinlogPosition) String() string {
	return fmt.Sprintf("%s:%d", p.File, p.Pos)
}

// IsZero reports whether p is the zero position (no file).
func (p BinlogPosition) IsZero() bool { return p.File == "" && p.Pos == 0 }

// Compare returns -1, 0 or +1 as p is before, equal to or after q. Files are
// ordered by their numeric extension when both share a base name
// ("mysql-bin.999999" < "mysql-bin.1000000"), otherwise by name; positions
// within one file by offset.
func (p BinlogPosition) Compare(q BinlogPosition) int {
	if c := compareFiles(p.File, q.File); c != 0 {
		return c
	}
	return cmp.Compare(p.Pos, q.Pos)
}

func compareFiles(a, b string) int {
	if a == b {
		return 0
	}
	ab, an, aok := splitFile(a)
	bb, bn, bok := splitFile(b)
	if aok && bok && ab == bb {
		return cmp.Compare(an, bn)
	}
	return strings.Compare(a, b)
}

// splitFile splits "base.000042" into ("base", 42, true).
func splitFile(name string) (string, uint64, bool) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 || i == len(name)-1 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(name[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return name[:i], n, true
}
