// Package binlog reads a MariaDB primary's binary log the way a semi-sync
// replica does and turns it into numbered transaction records.
//
// Two layers:
//
//   - Dumper is one replication connection: it registers with mariadbd as a
//     replica (optionally semi-sync), sends the binlog dump command and
//     returns the events one by one, raw bytes and decoded header, with
//     their checksums verified. Its Ack method sends the semi-sync reply
//     for a binlog position and may be called from any goroutine: the
//     dumper never acknowledges anything by itself.
//   - Source groups a dumper's events into transactions (txlog.Record),
//     numbers them with consecutive seqnos in one epoch, and reconnects with
//     bounded, jittered backoff when the link breaks or goes silent for
//     longer than the heartbeat allows, resuming on a transaction boundary
//     so that no transaction is skipped or numbered twice.
//
// Numbering is deterministic: opened with the seqno and end position of the
// last record already in the log, a Source produces the same records (same
// seqnos, GTIDs and bytes) as an earlier run did after that record.
//
// MariaDB treats the position a dump starts from as acknowledged by the
// semi-sync replica. A Source therefore restarts its dump from the last
// acknowledged position, not from the last record it read, and drops the
// transactions it has already numbered; see Resume.Acked. DESIGN.md §2 and
// docs/extraction.md describe the protocol details.
package binlog
