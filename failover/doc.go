// Package failover holds the managers' failover decisions as pure
// functions over plain values (DESIGN.md §6): today the election — may the
// managers promote automatically, and whom. Detection, promotion,
// switchover and rejoin, which compose the agents' control verbs, build on
// it.
package failover
