package apply

import (
	"errors"
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// ApplyError describes a record a channel could not apply. The channel
// stops on it until an operator calls Skip or Retry (or the applier is
// restarted); other channels go on up to the next serialized record.
type ApplyError struct {
	// Channel is the channel, or SerialChannel for a serialized record.
	Channel int
	Seqno   uint64
	GTID    string
	Schemas []string
	// Err is the SQL (or translation) error.
	Err error
}

func (e *ApplyError) Error() string {
	ch := fmt.Sprintf("channel %d", e.Channel)
	if e.Channel == SerialChannel {
		ch = "serialized"
	}
	return fmt.Sprintf("apply: %s: seqno %d (GTID %s, schemas %s): %v", ch, e.Seqno, e.GTID, strings.Join(e.Schemas, ","), e.Err)
}

func (e *ApplyError) Unwrap() error { return e.Err }

// ErrGuard is wrapped by the error a run ends with when a restart row was
// already at or past a block it was about to commit: another session (say,
// a previous run still committing) applied those records. A new run
// resumes correctly from the rows.
var ErrGuard = errors.New("restart row guard")

// errKind sorts errors from applying a block.
type errKind int

const (
	errSQL   errKind = iota // the record cannot be applied as it is: stop the channel
	errRetry                // deadlock or lock wait timeout: roll back and retry
	errFatal                // connection lost, killed, guard: end the run
)

// Retryable MariaDB errors.
const (
	erLockWaitTimeout = 1205
	erLockDeadlock    = 1213
)

func classifyErr(err error) errKind {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		var re *replayError
		if errors.As(err, &re) {
			return errSQL
		}
		return errFatal // context, driver.ErrBadConn, network
	}
	switch me.Number {
	case erLockWaitTimeout, erLockDeadlock:
		return errRetry
	case 1053, 1927, 1317: // server shutdown, connection killed, query interrupted
		return errFatal
	case 1644:
		if me.Message == guardMessage {
			return errFatal
		}
	}
	return errSQL
}

// isErrNo reports whether err is a MariaDB error with one of the numbers.
func isErrNo(err error, numbers ...uint16) bool {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	for _, n := range numbers {
		if me.Number == n {
			return true
		}
	}
	return false
}

// isGuard reports whether err is the restart-row guard firing.
func isGuard(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1644 && me.Message == guardMessage
}
