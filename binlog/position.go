package binlog

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Position is a place in the source's binary log: a file name (without
// directory) and a byte offset in it. The position of a transaction is the
// end of its last event, which is also where the next event begins.
type Position struct {
	File string
	Pos  uint64
}

// IsZero reports whether p is the zero Position (no file).
func (p Position) IsZero() bool { return p.File == "" && p.Pos == 0 }

// String formats p as "file:pos".
func (p Position) String() string {
	if p.IsZero() {
		return "(none)"
	}
	return p.File + ":" + strconv.FormatUint(p.Pos, 10)
}

// LogValue makes log/slog print p as "file:pos".
func (p Position) LogValue() slog.Value { return slog.StringValue(p.String()) }

// Compare orders positions: by file, then offset. Files with the same base
// name compare by their numeric extension ("binlog.999999" comes before
// "binlog.1000000"); other names compare as strings.
func (p Position) Compare(q Position) int {
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

// splitFile splits "base.000012" into "base" and 12.
func splitFile(f string) (string, uint64, bool) {
	i := strings.LastIndexByte(f, '.')
	if i < 0 || i == len(f)-1 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(f[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return f[:i], n, true
}

// validate checks that p can be sent in a binlog dump command.
func (p Position) validate() error {
	switch {
	case p.File == "":
		return fmt.Errorf("%w: binlog position %s has no file name", ErrConfig, p)
	case len(p.File) > 511 || strings.ContainsAny(p.File, "/\\\x00"):
		return fmt.Errorf("%w: binlog file name %q is not a plain file name", ErrConfig, p.File)
	case p.Pos < 4:
		return fmt.Errorf("%w: binlog position %s is before the first event (offset 4)", ErrConfig, p)
	case p.Pos > math.MaxUint32:
		return fmt.Errorf("%w: binlog position %s does not fit the dump command's 32-bit offset", ErrConfig, p)
	}
	return nil
}

var gtidStateRE = regexp.MustCompile(`^[0-9]+-[0-9]+-[0-9]+(,[0-9]+-[0-9]+-[0-9]+)*$`)

// validateGTIDState checks a MariaDB GTID position such as "0-1-5,1-2-9".
func validateGTIDState(s string) error {
	if !gtidStateRE.MatchString(s) {
		return fmt.Errorf("%w: GTID state %q is not a list of domain-server-seqno separated by commas", ErrConfig, s)
	}
	return nil
}

// CurrentPosition returns the end of the binary log of the server db
// talks to (SHOW MASTER STATUS) and its GTID position (@@gtid_binlog_pos).
// A new primary records them before it opens writes: they are where its
// extraction starts.
func CurrentPosition(ctx context.Context, db *sql.DB) (Position, string, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return Position{}, "", fmt.Errorf("binlog: current position: %w", err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, "SHOW MASTER STATUS")
	if err != nil {
		return Position{}, "", fmt.Errorf("binlog: SHOW MASTER STATUS: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return Position{}, "", fmt.Errorf("binlog: SHOW MASTER STATUS: %w", err)
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return Position{}, "", fmt.Errorf("binlog: SHOW MASTER STATUS: %w", err)
		}
		return Position{}, "", fmt.Errorf("%w: SHOW MASTER STATUS returned nothing: binary logging (log_bin) is off", ErrConfig)
	}
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil || len(vals) < 2 {
		return Position{}, "", fmt.Errorf("binlog: SHOW MASTER STATUS: scan: %v", err)
	}
	p := Position{File: string(vals[0])}
	if p.Pos, err = strconv.ParseUint(string(vals[1]), 10, 64); err != nil {
		return Position{}, "", fmt.Errorf("binlog: SHOW MASTER STATUS position %q: %w", vals[1], err)
	}
	rows.Close()
	var gtid string
	if err := conn.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_binlog_pos").Scan(&gtid); err != nil {
		return Position{}, "", fmt.Errorf("binlog: read @@gtid_binlog_pos: %w", err)
	}
	return p, gtid, nil
}
