// Package ship streams the transaction log from the primary's agent to the
// replica agents over gRPC: records flow down in seqno order with the
// primary's commit index, durable seqnos flow back up on the same stream.
package ship

import (
	"fmt"
)

// Verdict is the primary's answer to a replica's hello.
type Verdict int

const (
	// Accept: the replica's last record matches ours; stream from next.
	Accept Verdict = iota + 1
	// Fork: the replica holds records we do not have; it must drop every
	// record after ForkSeqno and say hello again.
	Fork
)

// Hello is what a replica says when it opens a stream.
type Hello struct {
	Node      string
	Epoch     uint64 // newest cluster epoch the replica knows
	NextSeqno uint64 // replica's last seqno + 1
	LastEpoch uint64 // epoch of the replica's record NextSeqno-1 (0: empty log)
}

// LogView is what the decision needs to know of the primary's log: its
// bounds and the epoch of any record in them. Epochs never decrease along
// the log.
type LogView struct {
	First, Last  uint64 // seqnos held; Last < First means an empty log
	CurrentEpoch uint64 // the primary's epoch
	EpochAt      func(seqno uint64) (uint64, error)
}

// HelloError is a refusal of a hello. Code says which kind it is.
type HelloError struct {
	Code HelloCode
	Msg  string
}

// HelloCode classifies a refused hello; the server maps it to a gRPC code.
type HelloCode int

const (
	// BadHello: a malformed hello (empty node, seqno 0, unknown epoch).
	BadHello HelloCode = iota + 1
	// StalePrimary: the replica knows a newer epoch than ours (fencing).
	StalePrimary
	// OutOfRange: the replica asks beyond our log end or before its start.
	OutOfRange
)

func (e *HelloError) Error() string { return e.Msg }

// Decide answers a replica's hello. Two logs that hold a record with the
// same (seqno, epoch) agree on every record before it (only one primary
// writes in an epoch, and a replica only appends after its previous record
// matched), so the check looks only at the replica's last record. On a
// mismatch it returns a fork seqno that is never below the true fork point:
// the replica truncates, says hello again, and the search converges.
func Decide(h Hello, v LogView) (Verdict, uint64, error) {
	if h.Node == "" {
		return 0, 0, &HelloError{BadHello, "hello: node id is empty"}
	}
	if h.NextSeqno == 0 {
		return 0, 0, &HelloError{BadHello, fmt.Sprintf("hello from %s: next seqno 0 (seqnos start at 1)", h.Node)}
	}
	if h.Epoch > v.CurrentEpoch {
		return 0, 0, &HelloError{StalePrimary, fmt.Sprintf("hello from %s: it knows epoch %d but this primary's epoch is %d: this node is no longer the primary (fenced)", h.Node, h.Epoch, v.CurrentEpoch)}
	}
	if h.LastEpoch > v.CurrentEpoch {
		return 0, 0, &HelloError{BadHello, fmt.Sprintf("hello from %s: its last record has epoch %d, unknown here (current epoch %d)", h.Node, h.LastEpoch, v.CurrentEpoch)}
	}
	if h.NextSeqno > 1 && h.LastEpoch == 0 {
		return 0, 0, &HelloError{BadHello, fmt.Sprintf("hello from %s: next seqno %d with last epoch 0 (a non-empty log has an epoch ≥ 1)", h.Node, h.NextSeqno)}
	}
	prev := h.NextSeqno - 1
	if prev == 0 {
		if v.First > 1 {
			return 0, 0, &HelloError{OutOfRange, fmt.Sprintf("hello from %s: it has no records but this log starts at seqno %d (older ones purged): re-provision the replica from a backup", h.Node, v.First)}
		}
		return Accept, 0, nil
	}
	if prev > v.Last && h.LastEpoch == v.CurrentEpoch {
		return 0, 0, &HelloError{OutOfRange, fmt.Sprintf("hello from %s: next seqno %d is beyond this log's end %d in the same epoch %d (if the primary's agent has just restarted it is re-reading its binlog: the replica is accepted once it has caught up)", h.Node, h.NextSeqno, v.Last, v.CurrentEpoch)}
	}
	if prev < v.First {
		// The record to compare with was purged: we cannot tell whether the
		// replica's log matches ours.
		return 0, 0, &HelloError{OutOfRange, fmt.Sprintf("hello from %s: next seqno %d, but this log starts at seqno %d (older records purged), so its record %d cannot be checked: re-provision the replica", h.Node, h.NextSeqno, v.First, prev)}
	}
	// prev ≥ First here.
	if prev <= v.Last {
		e, err := v.EpochAt(prev)
		if err != nil {
			return 0, 0, fmt.Errorf("hello from %s: read epoch of record %d: %w", h.Node, prev, err)
		}
		if e == h.LastEpoch {
			return Accept, 0, nil
		}
		if e < h.LastEpoch {
			// Our record at prev is older than the replica's: the replica's
			// last record came from a term we never saw. Step back one.
			return Fork, prev - 1, nil
		}
	}
	// The replica's tail is from an older epoch than ours at prev, or runs
	// past our end: fork at our last record whose epoch ≤ the replica's.
	hi := min(prev, v.Last)
	f, err := lastAtMost(v, hi, h.LastEpoch)
	if err != nil {
		return 0, 0, fmt.Errorf("hello from %s: %w", h.Node, err)
	}
	if f < v.First && f != 0 {
		return 0, 0, &HelloError{OutOfRange, fmt.Sprintf("hello from %s: its fork point lies before this log's first record %d: re-provision the replica", h.Node, v.First)}
	}
	return Fork, f, nil
}

// lastAtMost returns the largest seqno x in [First, hi] whose epoch is ≤ e,
// or First-1 if there is none. Epochs never decrease, so it bisects.
func lastAtMost(v LogView, hi, e uint64) (uint64, error) {
	lo := v.First // invariant: answer in [lo-1, hi]
	for lo <= hi {
		mid := lo + (hi-lo)/2
		me, err := v.EpochAt(mid)
		if err != nil {
			return 0, fmt.Errorf("read epoch of record %d: %w", mid, err)
		}
		if me <= e {
			lo = mid + 1
		} else {
			hi = mid - 1
		}
	}
	return lo - 1, nil
}
