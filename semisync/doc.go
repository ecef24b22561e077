// Package semisync decides when the primary's agent may send MariaDB the
// semi-synchronous ACK for a transaction: only once K members of the sync set
// hold it durably. MariaDB waits for one ACK from any semi-sync replica and
// cannot count, so the agent is the primary's only semi-sync client and this
// package does the counting.
//
// Everything here is pure logic in the style of etcd's raft package: a [Gate]
// owns no goroutines, reads no clock and does no I/O. The caller feeds it
// events (a transaction was extracted, a replica reported its durable seqno, a
// replica's stream went up or down, a sync-set or K change was recorded in
// Raft) and reads its outputs (the ACK to send now, whether a change may be
// recorded yet, whether the degraded marker must be recorded or may be
// cleared). A Gate is not safe for concurrent use; the caller serializes.
//
// # The invariant
//
// Let S and K be the sync set and K recorded in Raft, and m the degraded
// marker ("asynchronous since seqno m") recorded there, if any. Then at every
// moment:
//
//	every acknowledged seqno s with no marker, or with s < m, is held durably
//	by at least K members of S.
//
// Failover relies on it: positions from |S|-K+1 members of S always include
// one member holding every acknowledged transaction (see [Elect]).
//
// The gate keeps the invariant by always being at least as strict as Raft:
// it counts only members of the recorded set, never a K lower than the
// recorded one, and it tells the caller when a loosening change (removing a
// member, raising the recorded K, clearing the marker) may be recorded. The
// rules, each "tighten the gate first, record the looser state after":
//
//   - Add r: record S∪{r} in Raft first, then call [Gate.AddRecorded]. The
//     gate counts r once r has caught up (durable ≥ commit index).
//   - Remove r: call [Gate.BeginRemove]; the gate stops counting r at once.
//     Record S\{r} only when [Gate.CanRecordRemoval] says that K members of
//     S\{r} hold everything acknowledged, then call [Gate.RemovalRecorded].
//   - Raise K: [Gate.ProposeK] makes the new K govern new ACKs at once; record
//     it when [Gate.CanRecordK] allows (K members hold everything
//     acknowledged), then call [Gate.KRecorded].
//   - Lower K: record it first (any time), then call [Gate.KRecorded].
//   - Degrade: with policy [Degrade] and fewer than K healthy counted members,
//     [Gate.NeedsDegradeMarker] asks for "async since s" to be recorded; only
//     after [Gate.DegradeRecorded] do ACKs continue without K holders. When K
//     healthy members hold everything again the gate stops acknowledging
//     early by itself and [Gate.MarkerClearable] reports that the marker may be
//     cleared ([Gate.DegradeCleared]).
//
// The caller records at most one change per replica, one K change and one
// marker change at a time, and tells the gate once each is recorded.
package semisync
