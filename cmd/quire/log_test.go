package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/quire-ha/quire/txlog"
)

func TestLogDump(t *testing.T) {
	dir := t.TempDir()
	l, err := txlog.Open(dir, txlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for s := uint64(1); s <= 5; s++ {
		rec := txlog.Record{Seqno: s, Epoch: 1, GTID: "0-1-" + string(rune('0'+s)), SourceFile: "binlog.000001", SourcePos: 100 * s,
			ServerID: 1, Schemas: []string{"app"}, Events: []byte("events")}
		if s == 3 {
			rec.Flags = txlog.FlagDDL
		}
		if err := l.AppendSync(rec); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()

	var out, errOut bytes.Buffer
	if err := run([]string{"log", "dump", "--dir", dir, "--from", "2", "--to", "4", "--json"}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines:\n%s", len(lines), out.String())
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first["seqno"] != float64(2) || first["gtid"] != "0-1-2" {
		t.Fatalf("first record %v", first)
	}
	if !strings.Contains(lines[1], "DDL") {
		t.Fatalf("seqno 3 should show the DDL flag: %s", lines[1])
	}

	out.Reset()
	if err := run([]string{"log", "dump", "--dir", dir}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 5 {
		t.Fatalf("text dump has %d lines, want 5:\n%s", n, out.String())
	}
	for _, bad := range [][]string{
		{"log", "dump"},
		{"log", "dump", "--dir", dir, "--from", "4", "--to", "2"},
		{"log", "tail", "--dir", dir},
	} {
		if err := run(bad, &out, &errOut); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}
