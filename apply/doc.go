// Package apply replays committed transaction-log records on a replica's
// MariaDB with a sharded parallel applier (DESIGN.md §4, docs/applier.md).
//
// Records are classified (Classify) into a shard, applied on the channel of
// that shard (ShardMap), or serialized: run alone once every earlier record
// has committed. The Scheduler is that decision as a pure state machine. Each
// channel replays its records with BINLOG statements and the original
// session context of query events, keeps the source GTIDs, commits several
// records per database transaction (block commit), and updates its restart
// row in the same transaction, so a restarted Applier resumes exactly where
// the database says it stopped.
//
//	a, err := apply.New(apply.Config{DSN: dsn, Channels: 8})
//	err = a.Run(ctx, source, commitIndex)
//
// A Supervisor keeps an Applier running for a process: it runs it again
// after errors with back-off, retries records a channel stopped on, changes
// the channel count with a drain, keeps totals and status across runs, and
// applies a whole log before a promotion (ApplyThrough). Its commit index
// is a CommitSource and the process's part a Host (docs/applier.md).
//
//	s, err := apply.NewSupervisor(apply.SupervisorConfig{Applier: cfg, DB: db, Source: source, Host: host})
//	s.Run(ctx, commitSource)
package apply
