package accounts_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/quire-ha/quire/accounts"
	"github.com/quire-ha/quire/internal/mariadbtest"
	"github.com/quire-ha/quire/localdb"
)

func mysqlErr(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func grants(t *testing.T, db *sql.DB, account string) string {
	t.Helper()
	rows, err := db.Query("SHOW GRANTS FOR " + account)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var all []string
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			t.Fatal(err)
		}
		all = append(all, g)
	}
	return strings.Join(all, "\n")
}

// TestAccounts: the three accounts get exactly their lists (in the order
// SHOW GRANTS prints them); the application account writes on a writable
// primary only, never on a read-only replica or a fenced primary, and
// cannot lift read_only itself.
func TestAccounts(t *testing.T) {
	dbs := mariadbtest.Start(t, 1)
	in := dbs[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := in.DB.Exec("SET GLOBAL rpl_semi_sync_master_enabled = OFF"); err != nil { // no replica acknowledges here
		t.Fatal(err)
	}
	mon := accounts.Account("monitor", "127.0.0.1")
	for _, q := range []string{"CREATE USER " + mon + " IDENTIFIED BY 'm'", accounts.Grant(accounts.Monitor, accounts.MonitorOn, "monitor", "127.0.0.1")} {
		if _, err := in.DB.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ account, want string }{
		{accounts.Account(in.AgentUser, "127.0.0.1"), "GRANT " + accounts.Agent + " ON *.* TO"},
		{accounts.Account(in.AppUser, "127.0.0.1"), "GRANT " + accounts.App + " ON `app`.* TO"},
		{mon, "GRANT " + accounts.Monitor + " ON *.* TO"},
	} {
		g := grants(t, in.DB, tc.account)
		if !strings.Contains(g, tc.want) {
			t.Errorf("%s: SHOW GRANTS\n%s\nlacks %q (keep the list in SHOW GRANTS order)", tc.account, g, tc.want)
		}
		if strings.Contains(g, "WITH GRANT OPTION") {
			t.Errorf("%s has GRANT OPTION", tc.account)
		}
	}
	for _, p := range accounts.AppForbidden {
		if strings.Contains(accounts.App, p) {
			t.Errorf("the application's list holds %s", p)
		}
	}

	agent := open(t, in.AgentDSN(""))
	app := open(t, in.AppDSN(""))
	// A writable primary: the application creates its schema and writes.
	if err := localdb.OpenWrites(ctx, agent); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)", "INSERT INTO app.t VALUES (1)"} {
		if _, err := app.ExecContext(ctx, q); err != nil {
			t.Fatalf("application on a writable primary: %s: %v", q, err)
		}
	}
	// Nothing outside its schema, no server settings, no other sessions.
	for _, q := range []string{
		"CREATE DATABASE other", "INSERT INTO mysql.db (Host, Db, User) VALUES ('%', 'x', 'y')",
		"CREATE USER 'x'@'%'", "SET GLOBAL read_only = ON", "SET SESSION sql_log_bin = 0",
	} {
		if _, err := app.ExecContext(ctx, q); err == nil {
			t.Errorf("application account: %s succeeded", q)
		}
	}

	// A fenced primary: the application's session is killed and a new one
	// cannot write.
	held, err := app.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := held.ExecContext(ctx, "INSERT INTO app.t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	killed, err := localdb.Fence(ctx, agent)
	if err != nil || killed == 0 {
		t.Fatalf("fence: killed %d, %v", killed, err)
	}
	if _, err := held.ExecContext(ctx, "INSERT INTO app.t VALUES (3)"); err == nil {
		t.Error("the application's session survived the fence")
	}
	if _, err := app.ExecContext(ctx, "INSERT INTO app.t VALUES (4)"); mysqlErr(err) != 1290 {
		t.Errorf("application on a fenced primary: %v, want error 1290 (read-only)", err)
	}
	if _, err := app.ExecContext(ctx, "SET GLOBAL read_only = OFF"); mysqlErr(err) != 1227 {
		t.Errorf("application lifting read_only: %v, want error 1227 (access denied)", err)
	}
	// A replica (read_only=ON, as every server starts): same answer. The
	// agent's applier still writes there.
	if _, err := app.ExecContext(ctx, "UPDATE app.t SET id = 10 WHERE id = 1"); mysqlErr(err) != 1290 {
		t.Errorf("application on a read-only replica: %v, want error 1290", err)
	}
	if _, err := agent.ExecContext(ctx, "INSERT INTO app.t VALUES (5)"); err != nil {
		t.Errorf("the agent's account on a read-only server: %v", err)
	}
	// The monitor reads status, no data.
	monDB := open(t, "monitor:m@tcp("+in.Addr()+")/")
	if _, err := monDB.ExecContext(ctx, "SHOW BINARY LOGS"); err != nil {
		t.Errorf("monitor: SHOW BINARY LOGS: %v", err)
	}
	if _, err := monDB.ExecContext(ctx, "SELECT * FROM app.t"); err == nil {
		t.Error("monitor read application data")
	}
}

// TestCopies: the demo and the Ansible role grant exactly these lists.
func TestCopies(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..")
	for _, f := range []string{"scripts/demo.sh", "deploy/ansible/roles/mariadb/defaults/main.yml"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(strings.Fields(string(b)), " ") // YAML may fold a list over lines
		for name, list := range map[string]string{"agent": accounts.Agent, "app": accounts.App, "monitor": accounts.Monitor} {
			if !strings.Contains(text, list) {
				t.Errorf("%s does not grant the %s account's list verbatim:\n%s", f, name, list)
			}
		}
		if strings.Contains(string(b), "ALL PRIVILEGES") || strings.Contains(string(b), "GRANT ALL") {
			t.Errorf("%s still grants ALL", f)
		}
	}
}
