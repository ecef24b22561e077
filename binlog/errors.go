package binlog

import "errors"

// Errors a Dumper or Source returns. They are wrapped with context; test
// with errors.Is. All of them except ErrClosed stop a Source for good: it
// does not reconnect after them.
var (
	// ErrChecksum means an event's CRC32 did not match its bytes.
	ErrChecksum = errors.New("binlog event checksum mismatch")
	// ErrCompressed means the source writes (or wrote) compressed binlog
	// events, which Quire cannot ship: the applier's BINLOG statement
	// rejects them. The fix is SET GLOBAL log_bin_compress=OFF (and
	// log_bin_compress=OFF in my.cnf).
	ErrCompressed = errors.New("compressed binlog events are not supported (log_bin_compress=ON): run SET GLOBAL log_bin_compress=OFF on the source and set log_bin_compress=OFF in its my.cnf")
	// ErrIncident means the source logged an INCIDENT event: changes may
	// be missing from its binlog, so the replicas cannot be trusted to
	// match it any more.
	ErrIncident = errors.New("source binlog contains an incident event (changes may be missing from the binlog)")
	// ErrTxTooLarge means one transaction's events exceed Config.MaxTxSize.
	ErrTxTooLarge = errors.New("transaction exceeds the maximum transaction size")
	// ErrDiverged means the source's binlog does not match what was read
	// before: no transaction ends at the resume position, or the one that
	// does has another GTID.
	ErrDiverged = errors.New("source binlog diverged from the log")
	// ErrProtocol means the source sent something the reader does not
	// understand in the place it came.
	ErrProtocol = errors.New("binlog protocol error")
	// ErrConfig means the configuration or the source's settings do not
	// allow extraction.
	ErrConfig = errors.New("invalid binlog reader configuration")
	// ErrClosed means the Dumper or Source was closed.
	ErrClosed = errors.New("binlog reader closed")
)

// fatalError marks an error after which reconnecting cannot help.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// isFatal reports whether err stops a Source.
func isFatal(err error) bool {
	var f *fatalError
	if errors.As(err, &f) {
		return true
	}
	for _, e := range []error{ErrChecksum, ErrCompressed, ErrIncident, ErrTxTooLarge, ErrDiverged, ErrConfig} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
