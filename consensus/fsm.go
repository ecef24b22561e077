package consensus

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"
)

// snapshotFormat is the version of the snapshot encoding this build
// writes; it reads minSnapshotFormat..snapshotFormat. Format 2 added the
// decision log and the epoch history's time, reason and certificate.
const (
	snapshotFormat    = 2
	minSnapshotFormat = 1
)

// snapshotFile is the encoding of a snapshot.
type snapshotFile struct {
	Format int   `json:"format"`
	State  State `json:"state"`
}

// FSM is the raft.FSM holding the cluster [State]. It is safe for concurrent
// use: raft applies entries while readers call State.
type FSM struct {
	logger *slog.Logger

	mu      sync.RWMutex
	state   State
	changed notifier
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM holding [NewState]. A nil logger discards.
func NewFSM(logger *slog.Logger) *FSM {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &FSM{logger: logger, state: NewState()}
}

// State returns a copy of the current state.
func (f *FSM) State() State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone()
}

// Changed returns a channel closed at the next change of the state (an
// applied command or a restore).
func (f *FSM) Changed() <-chan struct{} { return f.changed.wait() }

// Apply applies one committed log entry. Its response is the new State (a
// copy) or, for an entry that does not decode or is invalid in the current
// state, the error; an invalid entry changes nothing.
func (f *FSM) Apply(l *raft.Log) any {
	cmd, err := Decode(l.Data)
	if err != nil {
		f.logger.Warn("consensus: refused log entry", "index", l.Index, "term", l.Term, "err", err)
		return err
	}
	f.mu.Lock()
	next, err := f.state.Apply(cmd)
	if err != nil {
		f.mu.Unlock()
		f.logger.Info("consensus: refused command", "index", l.Index, "term", l.Term, "type", cmd.Type(), "err", err)
		return err
	}
	f.state = next
	out := next.Clone()
	f.mu.Unlock()
	f.changed.notify()
	f.logger.Debug("consensus: applied command", "index", l.Index, "term", l.Term, "type", cmd.Type())
	return out
}

// Snapshot captures the current state.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return fsmSnapshot{state: f.State()}, nil
}

// Restore replaces the whole state with the snapshot's. A snapshot that does
// not decode or holds an inconsistent state is an error and changes nothing.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var snap snapshotFile
	if err := strictUnmarshalReader(rc, &snap); err != nil {
		return fmt.Errorf("consensus: restore snapshot: %w", err)
	}
	if snap.Format < minSnapshotFormat || snap.Format > snapshotFormat {
		return fmt.Errorf("consensus: restore snapshot: format %d not supported (this build reads %d to %d)", snap.Format, minSnapshotFormat, snapshotFormat)
	}
	if err := snap.State.Check(); err != nil {
		return fmt.Errorf("consensus: restore snapshot: %w", err)
	}
	f.mu.Lock()
	f.state = snap.State
	f.mu.Unlock()
	f.changed.notify()
	return nil
}

func strictUnmarshalReader(r io.Reader, v any) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	return strictUnmarshal(b, v)
}

type fsmSnapshot struct{ state State }

// Persist writes the snapshot.
func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	b, err := json.Marshal(snapshotFile{Format: snapshotFormat, State: s.state})
	if err == nil {
		_, err = sink.Write(b)
	}
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("consensus: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("consensus: persist snapshot: %w", err)
	}
	return nil
}

// Release implements raft.FSMSnapshot.
func (fsmSnapshot) Release() {}

// notifier hands out channels that are closed at the next notify.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}
