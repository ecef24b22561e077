package mariadbtest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// recordFile, when set, makes the helper tests write each instance's
// directory and pid to it, so the parent test can check for leftovers.
const recordEnv = "QUIRE_MARIADBTEST_RECORD"

func record(t *testing.T, insts []*Instance) {
	path := os.Getenv(recordEnv)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, in := range insts {
		fmt.Fprintf(f, "%s %d\n", in.Dir, in.PID())
	}
}

func TestThreeInstancesKillRestart(t *testing.T) {
	insts := Start(t, 3)
	record(t, insts)
	seen := map[uint32]bool{}
	for _, in := range insts {
		var id uint32
		var format, checksum string
		if err := in.DB.QueryRow("SELECT @@server_id, @@binlog_format, @@binlog_checksum").Scan(&id, &format, &checksum); err != nil {
			t.Fatalf("instance %d: %v", in.Index, err)
		}
		if id != in.ServerID || seen[id] {
			t.Errorf("instance %d: server_id %d (want %d, unique)", in.Index, id, in.ServerID)
		}
		seen[id] = true
		if format != "ROW" || checksum != "CRC32" {
			t.Errorf("instance %d: binlog_format=%s binlog_checksum=%s, want ROW/CRC32", in.Index, format, checksum)
		}
	}

	victim := insts[1]
	mustExec(t, victim, "CREATE DATABASE crash", "CREATE TABLE crash.t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB",
		"INSERT INTO crash.t VALUES (1,'one'),(2,'two')")
	oldPID := victim.PID()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	if alive(oldPID) {
		t.Fatalf("pid %d still alive after Kill", oldPID)
	}
	if err := victim.DB.Ping(); err == nil {
		t.Fatal("killed instance still answers")
	}
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	if victim.PID() == oldPID || victim.PID() == 0 {
		t.Fatalf("restart kept pid %d", oldPID)
	}
	var n int
	if err := victim.DB.QueryRow("SELECT COUNT(*) FROM crash.t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("after crash and restart: %d rows, want 2", n)
	}
	// The other instances were not disturbed.
	for _, in := range []*Instance{insts[0], insts[2]} {
		if err := in.DB.Ping(); err != nil {
			t.Errorf("instance %d: %v", in.Index, err)
		}
	}
}

func TestSettingsApplied(t *testing.T) {
	insts := Start(t, 1, Options{ServerIDBase: 700, Settings: SemiSyncPrimary})
	var point, enabled string
	if err := insts[0].DB.QueryRow("SELECT @@rpl_semi_sync_master_wait_point, @@rpl_semi_sync_master_enabled").Scan(&point, &enabled); err != nil {
		t.Fatal(err)
	}
	if point != "AFTER_SYNC" || enabled != "1" {
		t.Fatalf("wait_point=%s enabled=%s", point, enabled)
	}
	if insts[0].ServerID != 701 {
		t.Fatalf("server id %d", insts[0].ServerID)
	}
}

// TestHelperPanics is run only as a child of TestNothingLeftBehind: it starts
// two instances and panics.
func TestHelperPanics(t *testing.T) {
	if os.Getenv(recordEnv) == "" {
		t.Skip("helper for TestNothingLeftBehind")
	}
	insts := Start(t, 2, Options{ServerIDBase: 900})
	record(t, insts)
	panic("deliberate panic to prove cleanup")
}

// TestNothingLeftBehind runs tests in a child process (a passing one and a
// panicking one) and proves that no mariadbd process and no directory of
// theirs survives.
func TestNothingLeftBehind(t *testing.T) {
	if os.Getenv(recordEnv) != "" {
		t.Skip("already a child")
	}
	if testing.Short() {
		t.Skip("needs real mariadbd processes")
	}
	for _, run := range []struct{ name, pattern string }{
		{"pass", "^TestThreeInstancesKillRestart$"},
		{"panic", "^TestHelperPanics$"},
	} {
		t.Run(run.name, func(t *testing.T) {
			rec := t.TempDir() + "/record"
			cmd := exec.Command(os.Args[0], "-test.run", run.pattern, "-test.v")
			cmd.Env = append(os.Environ(), recordEnv+"="+rec)
			out, err := cmd.CombinedOutput()
			if run.name == "pass" && err != nil {
				t.Fatalf("child failed: %v\n%s", err, out)
			}
			if run.name == "panic" && (err == nil || !strings.Contains(string(out), "deliberate panic")) {
				t.Fatalf("child should have panicked: %v\n%s", err, out)
			}
			dirs, pids := readRecord(t, rec)
			want := map[string]int{"pass": 3, "panic": 2}[run.name]
			if len(dirs) != want {
				t.Fatalf("child recorded %d instances, want %d\n%s", len(dirs), want, out)
			}
			if left := Leftovers(dirs, pids); len(left) > 0 {
				t.Fatalf("left behind: %v", left)
			}
		})
	}
}

func readRecord(t *testing.T, path string) (dirs []string, pids []int) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 {
			t.Fatalf("bad record line %q", sc.Text())
		}
		pid, err := strconv.Atoi(fields[1])
		if err != nil || pid <= 0 {
			t.Fatalf("bad pid in %q", sc.Text())
		}
		dirs = append(dirs, fields[0])
		pids = append(pids, pid)
	}
	return dirs, pids
}

func mustExec(t *testing.T, in *Instance, qs ...string) {
	t.Helper()
	for _, q := range qs {
		if _, err := in.DB.Exec(q); err != nil {
			t.Fatalf("instance %d: %s: %v", in.Index, q, err)
		}
	}
}
