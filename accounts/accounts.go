// Package accounts names the MariaDB accounts of a Quire node and the
// privileges each needs: the agent's, the application's and the
// monitoring's. scripts/demo.sh, deploy/ansible and the tests grant exactly
// these lists (accounts_test.go checks the copies); docs/security.md
// explains each privilege.
//
// The lists are written in the order MariaDB 10.11's SHOW GRANTS prints
// them, so that "GRANT <list> ON <on> TO" appears verbatim in SHOW GRANTS
// (Ansible compares it to decide whether an account must be rewritten).
package accounts

import (
	"fmt"
	"strings"
)

// Agent is what the node's agent needs, on *.* (measured on MariaDB
// 10.11.19; docs/security.md says which statement needs which):
//
//   - replaying the primary's transactions on any schema: the object
//     privileges from SELECT to DELETE HISTORY, and SET USER for views,
//     triggers and routines whose DEFINER is another account;
//   - BINLOG REPLAY: BINLOG statements and the session's server_id,
//     gtid_domain_id, gtid_seq_no, pseudo_thread_id;
//   - BINLOG ADMIN: sql_log_bin, binlog_annotate_row_events,
//     log_bin_compress;
//   - REPLICATION SLAVE and BINLOG MONITOR: the binlog dump of the
//     extractor, SHOW BINARY LOGS and SHOW MASTER STATUS;
//   - REPLICATION MASTER ADMIN: the rpl_semi_sync_master_* settings;
//   - READ_ONLY ADMIN: SET GLOBAL read_only (the fence, promotion) and the
//     applier's writes on a read-only replica;
//   - PROCESS and CONNECTION ADMIN: find and kill client sessions when
//     fencing.
//
// Not granted: SUPER, GRANT OPTION, CREATE USER, FILE, SHUTDOWN, RELOAD.
// So the applier cannot replay account statements (CREATE USER, GRANT)
// made on the primary: manage accounts on each node, as the demo and the
// Ansible role do (with sql_log_bin=0).
const Agent = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, PROCESS, REFERENCES, INDEX, ALTER, " +
	"CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, REPLICATION SLAVE, BINLOG MONITOR, CREATE VIEW, SHOW VIEW, " +
	"CREATE ROUTINE, ALTER ROUTINE, EVENT, TRIGGER, DELETE HISTORY, SET USER, CONNECTION ADMIN, READ_ONLY ADMIN, " +
	"REPLICATION MASTER ADMIN, BINLOG ADMIN, BINLOG REPLAY"

// AgentOn is where Agent is granted.
const AgentOn = "*.*"

// App is what an application account gets, on its own schemas only (never
// *.*, which would include the mysql schema): data and schema changes.
// Without SUPER, READ_ONLY ADMIN and CONNECTION ADMIN it cannot write on a
// read-only replica or a fenced primary, nor escape a fence's KILL by
// reconnecting past max_connections.
const App = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, REFERENCES, INDEX, ALTER, CREATE TEMPORARY TABLES, " +
	"LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, EVENT, TRIGGER"

// Monitor is what a monitoring account (e.g. Prometheus' mysqld_exporter)
// gets, on *.*: it sees sessions, binlog and replication status, and no
// data.
const Monitor = "PROCESS, BINLOG MONITOR, SLAVE MONITOR"

// MonitorOn is where Monitor is granted.
const MonitorOn = "*.*"

// AppForbidden are the privileges an application account must never hold:
// each lets it write through read_only or survive a fence.
var AppForbidden = []string{"SUPER", "READ_ONLY ADMIN", "CONNECTION ADMIN", "BINLOG ADMIN", "ALL PRIVILEGES", "GRANT OPTION"}

// AppOn is where App is granted for schema db: `db`.*.
func AppOn(db string) string { return "`" + strings.ReplaceAll(db, "`", "``") + "`.*" }

// Grant is the GRANT statement of privs on on to 'user'@'host'.
func Grant(privs, on, user, host string) string {
	return fmt.Sprintf("GRANT %s ON %s TO %s", privs, on, Account(user, host))
}

// Account quotes 'user'@'host'.
func Account(user, host string) string {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	return q(user) + "@" + q(host)
}
