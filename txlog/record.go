// Package txlog is Quire's durable transaction log: a segmented, append-only
// file of records, one per source transaction, each identified by a global
// seqno and the epoch (primary term) that wrote it.
package txlog

// Flags describe what a transaction does, as far as the extractor could tell.
// The applier serializes any transaction that carries one of them.
type Flags uint32

const (
	// FlagDDL marks a transaction that contains a DDL statement.
	FlagDDL Flags = 1 << iota
	// FlagMultiSchema marks a transaction that touches more than one schema.
	FlagMultiSchema
	// FlagUnknownSchema marks a transaction containing a statement whose
	// schema could not be attributed with certainty.
	FlagUnknownSchema
)

// Record is one source transaction as stored in the log and shipped to replicas.
type Record struct {
	// Seqno is the global sequence number: consecutive from 1, never reused.
	Seqno uint64
	// Epoch is the primary term that wrote the record.
	Epoch uint64
	// GTID is the source GTID, "domain-server-sequence" on MariaDB.
	GTID string
	// SourceFile and SourcePos are the source binlog file and the end position
	// of the transaction's last event in it.
	SourceFile string
	SourcePos  uint64
	// ServerID is the source server_id.
	ServerID uint32
	// Timestamp is the commit time on the source, in Unix seconds (event header).
	Timestamp uint32
	// Schemas lists the schemas the transaction touches, sorted, without duplicates.
	Schemas []string
	// Flags describe the transaction (DDL, several schemas, unknown schema).
	Flags Flags
	// FormatDesc is the raw format-description event of the source binlog the
	// transaction came from; the applier replays it before the events.
	FormatDesc []byte
	// Events holds the transaction's raw binlog events exactly as received
	// (header, body and checksum of each), concatenated.
	Events []byte
}
