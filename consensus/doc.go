// Package consensus holds the replicated cluster state of Quire's managers and
// runs it on hashicorp/raft.
//
// The state ([State]) is a plain value: members, K, the sync set, the policy,
// the current epoch and primary, the epoch history, the degraded marker, the
// last known commit index, the anti-flapping record and the operator
// settings. It changes only through versioned [Command]s. Every command is
// checked by [State.Validate], a pure function that runs twice: before a
// command is proposed, so that bad input is refused with an error naming the
// field and value and nothing reaches the log, and again inside [FSM.Apply],
// where an invalid command is a no-op whose error becomes the Apply response.
//
// A [Node] wraps raft.Raft with a raft-boltdb log and stable store, a file
// snapshot store and a TCP transport that speaks mutual TLS when given a
// *tls.Config.
package consensus
