package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"

	"github.com/quire-ha/quire/binlog"
	"github.com/quire-ha/quire/txlog"
)

// stream is the recorded workload: where it ends in the source binlog and
// the transaction log built from it.
type stream struct {
	firstFile string          // the source's first binlog file
	end       binlog.Position // end of the last transaction
	lastGTID  string          // the last transaction's GTID
	records   uint64          // records in the log: seqnos 1..records
	bytes     uint64          // encoded bytes of the records
	perSchema map[string]int  // records by schema, for single-schema records
	multi     int             // records Quire serializes: flags, or not exactly one schema
	log       *txlog.Log
}

// endOfBinlog returns the source's first binlog file, the end of its binlog
// and its GTID position.
func endOfBinlog(ctx context.Context, db *sql.DB) (first string, end binlog.Position, gtid string, err error) {
	row, err := queryRow(ctx, db, "SHOW BINARY LOGS")
	if err != nil {
		return "", end, "", err
	}
	if first = row["Log_name"]; first == "" {
		return "", end, "", fmt.Errorf("SHOW BINARY LOGS returned no file: binary logging is off")
	}
	end, gtid, err = binlog.CurrentPosition(ctx, db)
	if err != nil {
		return "", end, "", err
	}
	return first, end, gtid, nil
}

// record reads the source binlog from its first event to the end of the
// transaction with GTID lastGTID through package binlog, the way a primary's
// agent extracts it (epoch 1, no semi-sync), and appends the records to a
// new transaction log in dir.
func record(ctx context.Context, src *server, dir, firstFile, lastGTID string, want uint64, logger *slog.Logger) (st stream, err error) {
	l, err := txlog.Open(dir, txlog.Options{Logger: logger})
	if err != nil {
		return st, err
	}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	bs, err := binlog.Open(ctx, binlog.Config{
		Addr: src.addr(), User: dbUser, Password: dbPassword,
		ServerID: 9001, Epoch: 1, Logger: logger,
	}, binlog.Resume{Position: binlog.Position{File: firstFile, Pos: 4}})
	if err != nil {
		return st, fmt.Errorf("open the source binlog: %w", err)
	}
	defer bs.Close()
	st.perSchema = map[string]int{}
	batch := make([]txlog.Record, 0, 512)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := l.AppendSync(batch...); err != nil {
			return err
		}
		batch = batch[:0]
		return nil
	}
	for {
		rec, err := bs.Next(ctx)
		if err != nil {
			return st, fmt.Errorf("read the source binlog after %d records: %w", st.records, err)
		}
		st.records++
		batch = append(batch, rec)
		if rec.Flags != 0 || len(rec.Schemas) != 1 {
			st.multi++
		} else {
			st.perSchema[rec.Schemas[0]]++
		}
		if rec.Seqno != st.records {
			return st, fmt.Errorf("record %d has seqno %d", st.records, rec.Seqno)
		}
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return st, err
			}
		}
		if rec.GTID == lastGTID {
			st.end = binlog.Position{File: rec.SourceFile, Pos: rec.SourcePos}
			break
		}
		if st.records >= want {
			return st, fmt.Errorf("record %d has GTID %s, not the last GTID %s", st.records, rec.GTID, lastGTID)
		}
	}
	if err := flush(); err != nil {
		return st, err
	}
	if st.records != want {
		return st, fmt.Errorf("the binlog holds %d transactions up to %s, the workload committed %d", st.records, lastGTID, want)
	}
	st.bytes = l.Stats().Bytes
	st.firstFile, st.lastGTID, st.log = firstFile, lastGTID, l
	return st, nil
}
