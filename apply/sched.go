package apply

import (
	"fmt"
	"time"
)

// SerialChannel is the channel number the scheduler uses for serialized
// records, which run alone on their own connection.
const SerialChannel = -1

// Item is what the scheduler knows of a record.
type Item struct {
	Seqno uint64
	// Channel is the record's channel; ignored when Serialize is set.
	Channel int
	// Serialize makes the record run alone (see Classify).
	Serialize bool
	// Timestamp is the source commit time in Unix seconds, for the time
	// bound on divergence.
	Timestamp uint32
}

// Step is the scheduler's answer to an offered record.
type Step int

const (
	// Dispatch: hand the record to its channel now.
	Dispatch Step = iota
	// RunAlone: every earlier record has committed; run this serialized
	// record now, alone, and report its commit before offering the next.
	RunAlone
	// WaitDrain: the record is serialized and earlier records are still
	// uncommitted; offer it again after the next commit.
	WaitDrain
	// WaitSerial: a serialized record is running; offer again after it
	// committed.
	WaitSerial
	// WaitAhead: the record's channel would get more than the window ahead
	// of the slowest uncommitted record (bounded divergence); offer again
	// after the next commit.
	WaitAhead
)

func (s Step) String() string {
	switch s {
	case Dispatch:
		return "dispatch"
	case RunAlone:
		return "run-alone"
	case WaitDrain:
		return "wait-drain"
	case WaitSerial:
		return "wait-serial"
	case WaitAhead:
		return "wait-ahead"
	}
	return fmt.Sprintf("Step(%d)", int(s))
}

// Decision is the scheduler's answer: what to do with the offered record,
// and for Dispatch and WaitAhead, on which channel.
type Decision struct {
	Step    Step
	Channel int
}

type pending struct {
	seqno uint64
	ts    uint32
}

// Scheduler is the applier's dispatch logic as a pure state machine: the
// reader offers records in seqno order and reports commits; the scheduler
// says what may happen. It does no I/O and is not safe for concurrent use.
//
// Guarantees (checked by property tests): records of one channel are
// dispatched in seqno order to that channel, which commits them in order,
// so records of one shard never commit out of order; a serialized record
// runs only when every earlier record has committed, and nothing after it
// is dispatched before it committed; no record is dispatched more than
// Window seqnos (or WindowTime of source time) after the oldest
// uncommitted record.
type Scheduler struct {
	window     uint64
	windowTime uint32
	queues     [][]pending // per channel: dispatched, uncommitted, in seqno order
	serial     *pending    // the serialized record running, if any
	inflight   int
	last       uint64 // last seqno offered and placed, or skipped
}

// NewScheduler returns a scheduler for n channels. window bounds how far (in
// seqnos) a record may be dispatched ahead of the oldest uncommitted record;
// windowTime does the same in source time (0 turns the time bound off).
// Records before after+1 count as committed.
func NewScheduler(n int, window uint64, windowTime time.Duration, after uint64) *Scheduler {
	if window < 1 {
		window = 1
	}
	return &Scheduler{
		window:     window,
		windowTime: uint32(windowTime / time.Second),
		queues:     make([][]pending, n),
		last:       after,
	}
}

// oldest returns the oldest uncommitted record.
func (s *Scheduler) oldest() (pending, bool) {
	var o pending
	found := false
	if s.serial != nil {
		o, found = *s.serial, true
	}
	for _, q := range s.queues {
		if len(q) > 0 && (!found || q[0].seqno < o.seqno) {
			o, found = q[0], true
		}
	}
	return o, found
}

// Offer proposes the next record. On Dispatch and RunAlone the scheduler
// counts the record as placed; on a wait it changes nothing and the caller
// offers the same record again after a commit.
func (s *Scheduler) Offer(it Item) Decision {
	if s.serial != nil {
		return Decision{Step: WaitSerial, Channel: it.Channel}
	}
	if it.Serialize {
		if s.inflight > 0 {
			return Decision{Step: WaitDrain, Channel: SerialChannel}
		}
		s.serial = &pending{seqno: it.Seqno, ts: it.Timestamp}
		s.last = it.Seqno
		return Decision{Step: RunAlone, Channel: SerialChannel}
	}
	if o, ok := s.oldest(); ok {
		if it.Seqno > o.seqno+s.window {
			return Decision{Step: WaitAhead, Channel: it.Channel}
		}
		if s.windowTime > 0 && it.Timestamp > o.ts+s.windowTime {
			return Decision{Step: WaitAhead, Channel: it.Channel}
		}
	}
	s.queues[it.Channel] = append(s.queues[it.Channel], pending{seqno: it.Seqno, ts: it.Timestamp})
	s.inflight++
	s.last = it.Seqno
	return Decision{Step: Dispatch, Channel: it.Channel}
}

// Skipped records that the record with seqno was already applied before a
// restart; it is never dispatched.
func (s *Scheduler) Skipped(seqno uint64) {
	if seqno > s.last {
		s.last = seqno
	}
}

// Committed reports that channel (or SerialChannel) committed every record
// it was given up to and including seqno. It fails if that does not match
// what was dispatched to it.
func (s *Scheduler) Committed(channel int, seqno uint64) error {
	if channel == SerialChannel {
		if s.serial == nil || s.serial.seqno != seqno {
			return fmt.Errorf("apply: scheduler: serialized commit of seqno %d, but %v is running", seqno, s.serial)
		}
		s.serial = nil
		return nil
	}
	if channel < 0 || channel >= len(s.queues) {
		return fmt.Errorf("apply: scheduler: commit on channel %d of %d", channel, len(s.queues))
	}
	q := s.queues[channel]
	i := 0
	for i < len(q) && q[i].seqno <= seqno {
		i++
	}
	if i == 0 || q[i-1].seqno != seqno {
		return fmt.Errorf("apply: scheduler: channel %d committed seqno %d, which it was not given", channel, seqno)
	}
	s.queues[channel] = q[i:]
	s.inflight -= i
	return nil
}

// MayCommit reports whether a block whose first record is first may commit
// in global commit order: no earlier record is uncommitted.
func (s *Scheduler) MayCommit(first uint64) bool {
	o, ok := s.oldest()
	return !ok || o.seqno >= first
}

// Applied returns the highest seqno s such that every record up to s has
// committed (or was skipped).
func (s *Scheduler) Applied() uint64 {
	if o, ok := s.oldest(); ok {
		return o.seqno - 1
	}
	return s.last
}

// Inflight returns the number of dispatched, uncommitted records, counting
// a running serialized record.
func (s *Scheduler) Inflight() int {
	if s.serial != nil {
		return s.inflight + 1
	}
	return s.inflight
}
