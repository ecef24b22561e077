package txlog

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestDump(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{SegmentSize: 4096})
	recs := []Record{
		{Seqno: 1, Epoch: 3, GTID: "0-1-41", SourceFile: "mariadb-bin.000003", SourcePos: 1234, ServerID: 1,
			Timestamp: 1767323045, Schemas: []string{"app", "billing"}, Flags: FlagMultiSchema,
			FormatDesc: make([]byte, 100), Events: make([]byte, 1180)},
		{Seqno: 2, Epoch: 3, GTID: "0-1-42", SourceFile: "mariadb-bin.000003", SourcePos: 1400, ServerID: 1,
			Timestamp: 1767323046, Flags: FlagDDL | FlagUnknownSchema, Events: make([]byte, 50)},
		{Seqno: 3, Epoch: 4},
	}
	if err := l.Append(recs...); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		from, to uint64
		json     bool
		want     string
	}{
		{"all text", 0, 0, false, `#1 epoch=3 gtid=0-1-41 source=mariadb-bin.000003:1234 server_id=1 time=2026-01-02T03:04:05Z schemas=app,billing flags=MULTI_SCHEMA size=1386 events=1180
#2 epoch=3 gtid=0-1-42 source=mariadb-bin.000003:1400 server_id=1 time=2026-01-02T03:04:06Z schemas=- flags=DDL|UNKNOWN_SCHEMA size=142 events=50
#3 epoch=4 gtid=- source=-:0 server_id=0 time=1970-01-01T00:00:00Z schemas=- flags=- size=68 events=0
`},
		{"range", 2, 2, false, `#2 epoch=3 gtid=0-1-42 source=mariadb-bin.000003:1400 server_id=1 time=2026-01-02T03:04:06Z schemas=- flags=DDL|UNKNOWN_SCHEMA size=142 events=50
`},
		{"clipped", 3, 99, false, `#3 epoch=4 gtid=- source=-:0 server_id=0 time=1970-01-01T00:00:00Z schemas=- flags=- size=68 events=0
`},
		{"empty range", 3, 2, false, ``},
		{"json", 1, 2, true, `{"seqno":1,"epoch":3,"gtid":"0-1-41","source_file":"mariadb-bin.000003","source_pos":1234,"server_id":1,"timestamp":1767323045,"time":"2026-01-02T03:04:05Z","schemas":["app","billing"],"flags":["MULTI_SCHEMA"],"size":1386,"events_bytes":1180}
{"seqno":2,"epoch":3,"gtid":"0-1-42","source_file":"mariadb-bin.000003","source_pos":1400,"server_id":1,"timestamp":1767323046,"time":"2026-01-02T03:04:06Z","schemas":[],"flags":["DDL","UNKNOWN_SCHEMA"],"size":142,"events_bytes":50}
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Dump(&b, l, tt.from, tt.to, tt.json); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Fatalf("Dump output:\n%s\nwant:\n%s", b.String(), tt.want)
			}
			if tt.json {
				for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
					var e DumpEntry
					if err := json.Unmarshal([]byte(line), &e); err != nil {
						t.Fatalf("line %q: %v", line, err)
					}
				}
			}
		})
	}
}
