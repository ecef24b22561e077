package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// CommandVersion is the envelope version this build writes. A change to any
// command's fields or meaning needs a new version, and a leader must not
// propose a version its followers cannot read. This build reads versions
// MinCommandVersion..CommandVersion.
//
// Version 2 added set_primary's certificate and by fields and the
// record_decision command; every version-1 command means the same in
// version 2.
const CommandVersion = 2

// MinCommandVersion is the oldest envelope version this build reads.
const MinCommandVersion = 1

// CommandType names a command on the wire.
type CommandType string

// The command types.
const (
	TypeAddMember           CommandType = "add_member"
	TypeUpdateMember        CommandType = "update_member"
	TypeRemoveMember        CommandType = "remove_member"
	TypeSetK                CommandType = "set_k"
	TypeSetPolicy           CommandType = "set_policy"
	TypeSetSyncSet          CommandType = "set_sync_set"
	TypeSetPrimary          CommandType = "set_primary"
	TypeMarkDegraded        CommandType = "mark_degraded"
	TypeClearDegraded       CommandType = "clear_degraded"
	TypeRecordCommitIndex   CommandType = "record_commit_index"
	TypeRecordFailover      CommandType = "record_failover"
	TypeAcknowledgeFailover CommandType = "acknowledge_failover"
	TypeSetSettings         CommandType = "set_settings"
	TypeRevokeCertificate   CommandType = "revoke_certificate"
	TypeRecordDecision      CommandType = "record_decision"
)

// A Command is one change to the [State]. The implementations are the
// command types of this package; the set is closed.
type Command interface {
	// Type names the command on the wire.
	Type() CommandType
	// apply changes s, a private copy, or returns why it may not.
	apply(s *State) *ValidationError
}

// ErrInvalid is wrapped by every [ValidationError].
var ErrInvalid = errors.New("consensus: invalid command")

// ValidationError says why a command was refused, naming the field and the
// bad value.
type ValidationError struct {
	Command CommandType // empty when the type itself is unknown
	Field   string      // the command field (or envelope field) at fault
	Value   any         // its bad value
	Reason  string
}

// invalid builds a ValidationError; State.Apply fills in the command type.
func invalid(field string, value any, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

func (e *ValidationError) detail() string {
	var v string
	switch x := e.Value.(type) {
	case string:
		v = fmt.Sprintf("%q", x)
	case CommandType:
		v = fmt.Sprintf("%q", string(x))
	case Policy:
		v = fmt.Sprintf("%q", string(x))
	case []string:
		v = fmt.Sprintf("%q", x)
	case time.Time:
		v = x.Format(time.RFC3339Nano)
	default:
		v = fmt.Sprintf("%v", x)
	}
	return fmt.Sprintf("%s=%s: %s", e.Field, v, e.Reason)
}

// Error returns e.g. `consensus: set_k: k=5: exceeds the 2 members that may be
// in the sync set`.
func (e *ValidationError) Error() string {
	if e.Command == "" {
		return "consensus: command: " + e.detail()
	}
	return fmt.Sprintf("consensus: %s: %s", e.Command, e.detail())
}

// Unwrap returns [ErrInvalid].
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Envelope is the wire form of a command.
type Envelope struct {
	Version int             `json:"version"`
	Type    CommandType     `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// Encode returns the wire form of cmd.
func Encode(cmd Command) ([]byte, error) {
	if cmd == nil {
		return nil, errors.New("consensus: encode: nil command")
	}
	payload, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("consensus: encode %s: %w", cmd.Type(), err)
	}
	b, err := json.Marshal(Envelope{Version: CommandVersion, Type: cmd.Type(), Payload: payload})
	if err != nil {
		return nil, fmt.Errorf("consensus: encode %s: %w", cmd.Type(), err)
	}
	return b, nil
}

// decoders maps each command type to a function decoding its payload.
var decoders = map[CommandType]func(json.RawMessage) (Command, error){
	TypeAddMember:           decodeAs[AddMember],
	TypeUpdateMember:        decodeAs[UpdateMember],
	TypeRemoveMember:        decodeAs[RemoveMember],
	TypeSetK:                decodeAs[SetK],
	TypeSetPolicy:           decodeAs[SetPolicy],
	TypeSetSyncSet:          decodeAs[SetSyncSet],
	TypeSetPrimary:          decodeAs[SetPrimary],
	TypeMarkDegraded:        decodeAs[MarkDegraded],
	TypeClearDegraded:       decodeAs[ClearDegraded],
	TypeRecordCommitIndex:   decodeAs[RecordCommitIndex],
	TypeRecordFailover:      decodeAs[RecordFailover],
	TypeAcknowledgeFailover: decodeAs[AcknowledgeFailover],
	TypeSetSettings:         decodeAs[SetSettings],
	TypeRevokeCertificate:   decodeAs[RevokeCertificate],
	TypeRecordDecision:      decodeAs[RecordDecision],
}

// Decode parses the wire form of a command. Unknown versions, types and
// fields are errors (a [*ValidationError]).
func Decode(b []byte) (Command, error) {
	var env Envelope
	if err := strictUnmarshal(b, &env); err != nil {
		return nil, invalid("envelope", string(truncate(b, 80)), "%v", err)
	}
	if env.Version < MinCommandVersion || env.Version > CommandVersion {
		return nil, &ValidationError{Command: env.Type, Field: "version", Value: env.Version,
			Reason: fmt.Sprintf("not supported (this build reads versions %d to %d)", MinCommandVersion, CommandVersion)}
	}
	dec, ok := decoders[env.Type]
	if !ok {
		return nil, invalid("type", env.Type, "unknown command type")
	}
	cmd, err := dec(env.Payload)
	if err != nil {
		return nil, &ValidationError{Command: env.Type, Field: "payload", Value: string(truncate(env.Payload, 80)), Reason: err.Error()}
	}
	return cmd, nil
}

func decodeAs[T Command](raw json.RawMessage) (Command, error) {
	var c T
	if len(raw) == 0 || string(raw) == "null" {
		return c, nil
	}
	if err := strictUnmarshal(raw, &c); err != nil {
		return nil, err
	}
	return c, nil
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return append(slices.Clone(b[:n]), "..."...)
}

// Apply returns the state after cmd, leaving s untouched. If cmd is invalid
// in s it returns s and a [*ValidationError]; a command is applied entirely
// or not at all.
func (s State) Apply(cmd Command) (State, error) {
	if cmd == nil {
		return s, invalid("type", "", "nil command")
	}
	if err := s.Check(); err != nil {
		return s, fmt.Errorf("consensus: %s: current state is inconsistent: %w", cmd.Type(), err)
	}
	next := s.Clone()
	if err := cmd.apply(&next); err != nil {
		if err.Command == "" {
			err.Command = cmd.Type()
		}
		return s, err
	}
	if err := next.Check(); err != nil {
		// A command-specific check is missing; refuse rather than break an
		// invariant.
		return s, &ValidationError{Command: cmd.Type(), Field: "command", Value: cmd, Reason: "would break an invariant: " + err.Error()}
	}
	return next, nil
}

// Validate reports whether cmd may be applied to s: nil or a
// [*ValidationError] naming the field and value at fault.
func (s State) Validate(cmd Command) error {
	_, err := s.Apply(cmd)
	return err
}

// normTime strips the monotonic clock reading and the location so that a time
// compares equal after a JSON round trip.
func normTime(t time.Time) time.Time { return t.UTC().Round(0) }

// AddMember adds a member. Its ID and addresses must be new.
type AddMember struct {
	Member Member `json:"member"`
}

// Type implements [Command].
func (AddMember) Type() CommandType { return TypeAddMember }

func (c AddMember) apply(s *State) *ValidationError {
	if err := checkMember(c.Member); err != nil {
		return err
	}
	if _, ok := s.memberIndex(c.Member.ID); ok {
		return invalid("member.id", c.Member.ID, "is already a member")
	}
	if len(s.Members) >= MaxMembers {
		return invalid("member.id", c.Member.ID, "would be member %d; a cluster has at most %d", len(s.Members)+1, MaxMembers)
	}
	if err := checkAddressesUnique(append(slices.Clone(s.Members), c.Member)); err != nil {
		return err
	}
	i, _ := s.memberIndex(c.Member.ID)
	s.Members = slices.Insert(s.Members, i, c.Member)
	return nil
}

// UpdateMember replaces the record of an existing member (addresses,
// priority, may-be-primary).
type UpdateMember struct {
	Member Member `json:"member"`
}

// Type implements [Command].
func (UpdateMember) Type() CommandType { return TypeUpdateMember }

func (c UpdateMember) apply(s *State) *ValidationError {
	if err := checkMember(c.Member); err != nil {
		return err
	}
	i, ok := s.memberIndex(c.Member.ID)
	if !ok {
		return invalid("member.id", c.Member.ID, "is not a member")
	}
	if c.Member.ID == s.Primary && !c.Member.MayBePrimary {
		return invalid("member.may_be_primary", false, "member %q is the primary", c.Member.ID)
	}
	s.Members[i] = c.Member
	return checkAddressesUnique(s.Members)
}

// RemoveMember removes a member that is neither the primary nor in the sync
// set.
type RemoveMember struct {
	ID string `json:"id"`
}

// Type implements [Command].
func (RemoveMember) Type() CommandType { return TypeRemoveMember }

func (c RemoveMember) apply(s *State) *ValidationError {
	if c.ID == "" {
		return invalid("id", c.ID, "is empty")
	}
	i, ok := s.memberIndex(c.ID)
	if !ok {
		return invalid("id", c.ID, "is not a member")
	}
	if c.ID == s.Primary {
		return invalid("id", c.ID, "is the primary of epoch %d (switch over first)", s.Epoch)
	}
	if s.InSyncSet(c.ID) {
		return invalid("id", c.ID, "is in the sync set (remove it from the sync set first)")
	}
	if n := s.SyncCandidates() - 1; s.K > n {
		return invalid("id", c.ID, "removing it leaves %d members that may be in the sync set, fewer than k=%d", n, s.K)
	}
	s.Members = slices.Delete(s.Members, i, i+1)
	return nil
}

// SetK sets how many members of the sync set must acknowledge a commit.
type SetK struct {
	K int `json:"k"`
}

// Type implements [Command].
func (SetK) Type() CommandType { return TypeSetK }

func (c SetK) apply(s *State) *ValidationError {
	if c.K < 0 {
		return invalid("k", c.K, "is negative")
	}
	if n := s.SyncCandidates(); c.K > n {
		return invalid("k", c.K, "exceeds the %d members that may be in the sync set", n)
	}
	s.K = c.K
	return nil
}

// SetPolicy sets the policy for fewer than K healthy sync-set members.
type SetPolicy struct {
	Policy Policy `json:"policy"`
}

// Type implements [Command].
func (SetPolicy) Type() CommandType { return TypeSetPolicy }

func (c SetPolicy) apply(s *State) *ValidationError {
	if c.Policy != PolicyStrict && c.Policy != PolicyDegrade {
		return invalid("policy", c.Policy, "unknown policy (want %q or %q)", PolicyStrict, PolicyDegrade)
	}
	s.Policy = c.Policy
	return nil
}

// SetSyncSet replaces the sync set. Order does not matter; the state keeps
// it sorted.
type SetSyncSet struct {
	Members []string `json:"members"`
}

// Type implements [Command].
func (SetSyncSet) Type() CommandType { return TypeSetSyncSet }

func (c SetSyncSet) apply(s *State) *ValidationError {
	set, err := s.syncSet("members", c.Members, s.Primary)
	if err != nil {
		return err
	}
	s.SyncSet = set
	return nil
}

// syncSet checks a proposed sync set against the members and the (new)
// primary and returns it sorted.
func (s *State) syncSet(field string, ids []string, primary string) ([]string, *ValidationError) {
	set := slices.Clone(ids)
	for _, id := range set {
		if id == "" {
			return nil, invalid(field, ids, "contains an empty id")
		}
		if _, ok := s.memberIndex(id); !ok {
			return nil, invalid(field, id, "is not a member")
		}
		if id == primary {
			return nil, invalid(field, id, "is the primary")
		}
	}
	slices.Sort(set)
	for i := 1; i < len(set); i++ {
		if set[i] == set[i-1] {
			return nil, invalid(field, set[i], "is listed twice")
		}
	}
	if set == nil {
		set = []string{}
	}
	return set, nil
}

// SetPrimary starts a new epoch with a new primary. It is the fence: agents
// refuse streams of older epochs once it is committed.
type SetPrimary struct {
	// Epoch must be exactly the current epoch + 1.
	Epoch uint64 `json:"epoch"`
	// Primary is the member ID of the new primary; it must be allowed to be
	// primary.
	Primary string `json:"primary"`
	// FirstSeqno is the first seqno the new primary will write: its last
	// seqno + 1.
	FirstSeqno uint64 `json:"first_seqno"`
	// SyncSet is the sync set from this epoch on. Nil means the current sync
	// set without the new primary.
	SyncSet []string `json:"sync_set,omitempty"`
	// AcceptLoss allows FirstSeqno at or below the recorded commit index on a
	// cluster that is not degraded (acknowledged commits are then lost).
	AcceptLoss bool `json:"accept_loss,omitempty"`
	// Automatic marks an automatic failover: it is recorded as the state's
	// LastFailover in the same entry and refused inside the anti-flapping
	// window of an unacknowledged earlier one.
	Automatic bool      `json:"automatic,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	At        time.Time `json:"at,omitzero"`
	// Certificate, if set, is the failover certificate (version 2): its
	// PrimarySeqno must be FirstSeqno-1 and, unless the cluster is degraded
	// or AcceptLoss is set, at least its CommitIndex, which must include
	// the recorded one.
	Certificate *Certificate `json:"certificate,omitempty"`
	// By names who decided (a manager's or an operator's name; version 2).
	By string `json:"by,omitempty"`
}

// Type implements [Command].
func (SetPrimary) Type() CommandType { return TypeSetPrimary }

func (c SetPrimary) apply(s *State) *ValidationError {
	if c.Epoch != s.Epoch+1 {
		return invalid("epoch", c.Epoch, "must be %d (current epoch %d + 1)", s.Epoch+1, s.Epoch)
	}
	if c.Primary == "" {
		return invalid("primary", c.Primary, "is empty")
	}
	m, ok := s.Member(c.Primary)
	if !ok {
		return invalid("primary", c.Primary, "is not a member")
	}
	if !m.MayBePrimary {
		return invalid("primary", c.Primary, "may not be primary (may_be_primary is false)")
	}
	if n := len(s.Members) - 1; s.K > n {
		return invalid("primary", c.Primary, "k=%d would exceed the %d members that may be in the sync set", s.K, n)
	}
	if c.FirstSeqno == 0 {
		return invalid("first_seqno", c.FirstSeqno, "must be at least 1")
	}
	if n := len(s.EpochHistory); n > 0 && c.FirstSeqno < s.EpochHistory[n-1].FirstSeqno {
		last := s.EpochHistory[n-1]
		return invalid("first_seqno", c.FirstSeqno, "is below epoch %d's first seqno %d", last.Epoch, last.FirstSeqno)
	}
	if c.FirstSeqno <= s.CommitIndex && s.Degraded == nil && !c.AcceptLoss {
		return invalid("first_seqno", c.FirstSeqno,
			"is not above the recorded commit index %d: the new primary would lack acknowledged commits (set accept_loss to override)", s.CommitIndex)
	}
	var set []string
	if c.SyncSet == nil {
		for _, id := range s.SyncSet {
			if id != c.Primary {
				set = append(set, id)
			}
		}
		if set == nil {
			set = []string{}
		}
	} else {
		var err *ValidationError
		if set, err = s.syncSet("sync_set", c.SyncSet, c.Primary); err != nil {
			return err
		}
	}
	if cert := c.Certificate; cert != nil {
		if cert.PrimarySeqno+1 != c.FirstSeqno {
			return invalid("certificate.primary_seqno", cert.PrimarySeqno, "must be first_seqno-1 = %d", c.FirstSeqno-1)
		}
		if cert.CommitIndex < s.CommitIndex {
			return invalid("certificate.commit_index", cert.CommitIndex, "is below the recorded commit index %d", s.CommitIndex)
		}
		if cert.PrimarySeqno < cert.CommitIndex && s.Degraded == nil && !c.AcceptLoss {
			return invalid("certificate.primary_seqno", cert.PrimarySeqno,
				"is below the highest reported commit index %d (from %s): the new primary would lack acknowledged commits (set accept_loss to override)",
				cert.CommitIndex, cert.CommitIndexFrom)
		}
	}
	var failover *Failover
	if c.Automatic {
		if c.At.IsZero() {
			return invalid("at", c.At, "is zero (an automatic failover needs its time)")
		}
		if c.Reason == "" {
			return invalid("reason", c.Reason, "is empty (an automatic failover needs its reason)")
		}
		if err := s.antiFlap("automatic", c.At); err != nil {
			return err
		}
		failover = &Failover{At: normTime(c.At), Epoch: c.Epoch, From: s.Primary, To: c.Primary, Reason: c.Reason}
	}
	s.Epoch = c.Epoch
	s.Primary = c.Primary
	s.EpochHistory = append(s.EpochHistory, EpochEntry{
		Epoch: c.Epoch, Primary: c.Primary, FirstSeqno: c.FirstSeqno,
		At: normTime(c.At), Automatic: c.Automatic, Reason: c.Reason, Certificate: c.Certificate.Clone(),
	})
	s.SyncSet = set
	if failover != nil {
		s.LastFailover = failover
	}
	if !c.At.IsZero() && c.Reason != "" {
		s.appendDecision(Decision{At: normTime(c.At), Kind: DecisionPromotion, Epoch: c.Epoch, Node: c.Primary, By: c.By, Reason: c.Reason})
	}
	return nil
}

// appendDecision adds d to the decision log, dropping the oldest entries
// beyond MaxDecisions.
func (s *State) appendDecision(d Decision) {
	s.Decisions = append(s.Decisions, d)
	if n := len(s.Decisions) - MaxDecisions; n > 0 {
		s.Decisions = slices.Delete(s.Decisions, 0, n)
	}
}

// antiFlap refuses an automatic failover at time at inside the window of an
// unacknowledged earlier one.
func (s *State) antiFlap(field string, at time.Time) *ValidationError {
	last := s.LastFailover
	if last == nil || last.Acknowledged {
		return nil
	}
	if until := last.At.Add(s.Settings.AntiFlapWindow); at.Before(until) {
		return invalid(field, true,
			"the automatic failover of %s (epoch %d) is unacknowledged and the anti_flap_window %s lasts until %s",
			last.At.Format(time.RFC3339), last.Epoch, s.Settings.AntiFlapWindow, until.Format(time.RFC3339))
	}
	return nil
}

// AutomaticFailoverAllowed reports whether an automatic failover at time now
// passes the anti-flapping rule, and if not, why.
func (s State) AutomaticFailoverAllowed(now time.Time) error {
	if err := s.antiFlap("automatic", now); err != nil {
		err.Command = TypeSetPrimary
		return err
	}
	return nil
}

// MarkDegraded records that commits continue without K acknowledgements from
// seqno AsyncSince on. Only under policy degrade, and only once.
type MarkDegraded struct {
	AsyncSince uint64    `json:"async_since"`
	Reason     string    `json:"reason"`
	At         time.Time `json:"at"`
}

// Type implements [Command].
func (MarkDegraded) Type() CommandType { return TypeMarkDegraded }

func (c MarkDegraded) apply(s *State) *ValidationError {
	if s.Policy != PolicyDegrade {
		return invalid("policy", s.Policy, "degrading needs policy %q", PolicyDegrade)
	}
	if s.Degraded != nil {
		return invalid("degraded", s.Degraded.AsyncSince, "already degraded since seqno %d (%s)", s.Degraded.AsyncSince, s.Degraded.Reason)
	}
	if c.AsyncSince == 0 {
		return invalid("async_since", c.AsyncSince, "must be at least 1")
	}
	if c.Reason == "" {
		return invalid("reason", c.Reason, "is empty")
	}
	if c.At.IsZero() {
		return invalid("at", c.At, "is zero")
	}
	s.Degraded = &Degraded{AsyncSince: c.AsyncSince, Reason: c.Reason, At: normTime(c.At)}
	return nil
}

// ClearDegraded removes the degraded marker: K members of the sync set hold
// everything again.
type ClearDegraded struct{}

// Type implements [Command].
func (ClearDegraded) Type() CommandType { return TypeClearDegraded }

func (ClearDegraded) apply(s *State) *ValidationError {
	if s.Degraded == nil {
		return invalid("degraded", nil, "the cluster is not degraded")
	}
	s.Degraded = nil
	return nil
}

// RecordCommitIndex records the commit index (a seqno). It never goes
// backwards.
type RecordCommitIndex struct {
	Seqno uint64 `json:"seqno"`
}

// Type implements [Command].
func (RecordCommitIndex) Type() CommandType { return TypeRecordCommitIndex }

func (c RecordCommitIndex) apply(s *State) *ValidationError {
	if c.Seqno < s.CommitIndex {
		return invalid("seqno", c.Seqno, "is below the recorded commit index %d (it never goes backwards)", s.CommitIndex)
	}
	s.CommitIndex = c.Seqno
	return nil
}

// RecordFailover records an automatic failover for anti-flapping on its own.
// [SetPrimary] with Automatic set does the same atomically with the
// promotion and should be preferred.
type RecordFailover struct {
	At     time.Time `json:"at"`
	Epoch  uint64    `json:"epoch"`
	From   string    `json:"from,omitempty"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
}

// Type implements [Command].
func (RecordFailover) Type() CommandType { return TypeRecordFailover }

func (c RecordFailover) apply(s *State) *ValidationError {
	if c.At.IsZero() {
		return invalid("at", c.At, "is zero")
	}
	if c.Epoch == 0 || c.Epoch > s.Epoch {
		return invalid("epoch", c.Epoch, "must be between 1 and the current epoch %d", s.Epoch)
	}
	if _, ok := s.memberIndex(c.To); !ok {
		return invalid("to", c.To, "is not a member")
	}
	if c.Reason == "" {
		return invalid("reason", c.Reason, "is empty")
	}
	s.LastFailover = &Failover{At: normTime(c.At), Epoch: c.Epoch, From: c.From, To: c.To, Reason: c.Reason}
	return nil
}

// AcknowledgeFailover records an operator's acknowledgement of the last
// automatic failover, lifting the anti-flapping block. Acknowledging twice is
// a no-op.
type AcknowledgeFailover struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// Type implements [Command].
func (AcknowledgeFailover) Type() CommandType { return TypeAcknowledgeFailover }

func (c AcknowledgeFailover) apply(s *State) *ValidationError {
	if s.LastFailover == nil {
		return invalid("last_failover", nil, "no automatic failover to acknowledge")
	}
	if c.By == "" {
		return invalid("by", c.By, "is empty")
	}
	if c.At.IsZero() {
		return invalid("at", c.At, "is zero")
	}
	if s.LastFailover.Acknowledged {
		return nil
	}
	s.LastFailover.Acknowledged = true
	s.LastFailover.AcknowledgedBy = c.By
	s.LastFailover.AcknowledgedAt = normTime(c.At)
	return nil
}

// SetSettings changes operator settings; nil fields keep their value.
type SetSettings struct {
	FailoverTimeout *time.Duration `json:"failover_timeout,omitempty"`
	AntiFlapWindow  *time.Duration `json:"anti_flap_window,omitempty"`
}

// Type implements [Command].
func (SetSettings) Type() CommandType { return TypeSetSettings }

func (c SetSettings) apply(s *State) *ValidationError {
	if c.FailoverTimeout == nil && c.AntiFlapWindow == nil {
		return invalid("settings", nil, "nothing to set")
	}
	if c.FailoverTimeout != nil {
		if *c.FailoverTimeout <= 0 {
			return invalid("failover_timeout", *c.FailoverTimeout, "must be positive")
		}
		if *c.FailoverTimeout > MaxFailoverTimeout {
			return invalid("failover_timeout", *c.FailoverTimeout, "is longer than %s", MaxFailoverTimeout)
		}
		s.Settings.FailoverTimeout = *c.FailoverTimeout
	}
	if c.AntiFlapWindow != nil {
		if *c.AntiFlapWindow < 0 {
			return invalid("anti_flap_window", *c.AntiFlapWindow, "is negative")
		}
		if *c.AntiFlapWindow > MaxAntiFlapWindow {
			return invalid("anti_flap_window", *c.AntiFlapWindow, "is longer than %s", MaxAntiFlapWindow)
		}
		s.Settings.AntiFlapWindow = *c.AntiFlapWindow
	}
	return nil
}

// MaxDecisionReason bounds the reason of a decision.
const MaxDecisionReason = 4096

// RecordDecision appends an entry to the decision log (version 2). The
// managers record every detection, refusal and note of automatic failover
// this way; promotions are recorded by SetPrimary itself.
type RecordDecision struct {
	Decision Decision `json:"decision"`
}

// Type implements [Command].
func (RecordDecision) Type() CommandType { return TypeRecordDecision }

func (c RecordDecision) apply(s *State) *ValidationError {
	d := c.Decision
	switch d.Kind {
	case DecisionDetection, DecisionRefusal, DecisionNote:
	case DecisionPromotion:
		return invalid("decision.kind", string(d.Kind), "promotions are recorded by set_primary")
	default:
		return invalid("decision.kind", string(d.Kind), "unknown kind (want %q, %q or %q)", DecisionDetection, DecisionRefusal, DecisionNote)
	}
	if d.At.IsZero() {
		return invalid("decision.at", d.At, "is zero")
	}
	if d.Reason == "" {
		return invalid("decision.reason", d.Reason, "is empty")
	}
	if len(d.Reason) > MaxDecisionReason {
		return invalid("decision.reason", len(d.Reason), "is longer than %d bytes", MaxDecisionReason)
	}
	if d.Epoch > s.Epoch {
		return invalid("decision.epoch", d.Epoch, "is beyond the current epoch %d", s.Epoch)
	}
	d.At = normTime(d.At)
	s.appendDecision(d)
	return nil
}
