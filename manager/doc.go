// Package manager is the client side of Quire's managers: the types agents
// and operators exchange with them and a [Client] that finds the Raft leader
// among a list of managers and retries while leadership moves.
//
// Agents call [Client.RegisterAgent] once and [Client.Heartbeat] about every
// second; the [Assignment] in each answer says what the agent should be (its
// role, the epoch, the primary's addresses, K, the sync set, the degraded
// marker), so an agent follows changes by heartbeating. Operators (the quire
// CLI) call [Client.Status] and the write methods.
//
// The server lives in package manager/server. This package does not import
// the consensus package, so the agent side can use it without pulling Raft
// in (DESIGN.md §8: the agent side never imports consensus).
package manager
