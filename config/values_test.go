package config

import (
	"testing"
	"time"
)

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"0", 0, true},
		{"1048576", MiB, true},
		{"1_048_576", MiB, true},
		{"512B", 512, true},
		{"64KiB", 64 * KiB, true},
		{"64MiB", 64 * MiB, true},
		{"64 MiB", 64 * MiB, true},
		{"64mib", 64 * MiB, true},
		{"1GiB", GiB, true},
		{"2TiB", 2 * TiB, true},
		{"8388607TiB", 8388607 * TiB, true},
		{"8388608TiB", 0, false}, // overflows int64
		{"99999999999999999999", 0, false},
		{"", 0, false},
		{"MiB", 0, false},
		{"-1", 0, false},
		{"1.5GiB", 0, false},
		{"64MB", 0, false},
		{"64M", 0, false},
		{"1 GB", 0, false},
		{"64 parsecs", 0, false},
	} {
		got, err := parseByteSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	for s, want := range map[ByteSize]string{0: "0", 1: "1", 1000: "1000", KiB: "1KiB", 1536: "1536",
		64 * MiB: "64MiB", 1536 * MiB: "1536MiB", GiB: "1GiB", 4 * TiB: "4TiB"} {
		if got := s.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(s), got, want)
		}
		if back, err := parseByteSize(want); err != nil || back != s {
			t.Errorf("round trip of %q = %d, %v", want, back, err)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0s", time.Hour: "1h", 168 * time.Hour: "168h",
		90 * time.Minute: "90m", 90 * time.Second: "90s", 50 * time.Millisecond: "50ms", 1500 * time.Microsecond: "1.5ms"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(want); err != nil || back != d {
			t.Errorf("round trip of %q = %v, %v", want, back, err)
		}
	}
}

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		check, in string
		ok        bool
	}{
		{"nodeid", "db1", true},
		{"nodeid", "0", true},
		{"nodeid", "a-b_c", true},
		{"nodeid", "a234567890123456789012345678901234567890123456789012345678901234"[:63], true},
		{"nodeid", "a234567890123456789012345678901234567890123456789012345678901234", false},
		{"nodeid", "", false},
		{"nodeid", "-db", false},
		{"nodeid", "Db1", false},
		{"nodeid", "db.1", false},
		{"listen", "0.0.0.0:7400", true},
		{"listen", ":7400", true},
		{"listen", "[::]:7400", true},
		{"listen", "host:0", true}, {"listen", "host:00x", false},
		{"listen", "host:65536", false},
		{"listen", "host:+80", false},
		{"listen", "host:http", false},
		{"listen", "host", false},
		{"hostport", "db1.example:7301", true},
		{"hostport", "[fe80::1]:7301", true},
		{"hostport", ":7301", false},
		{"hostport", "a b:7301", false},
		{"envname", "QUIRE_PW", true},
		{"envname", "_x1", true},
		{"envname", "1X", false},
		{"envname", "A-B", false},
		{"ident", "sales", true},
		{"ident", "odd.schema name", true},
		{"ident", "", false},
		{"ident", "trailing ", false},
		{"ident", "nul\x00", false},
		{"ident", string(make([]byte, 65)), false},
	} {
		if got := checks[tc.check].ok(tc.in); got != tc.ok {
			t.Errorf("%s(%q) = %v, want %v", tc.check, tc.in, got, tc.ok)
		}
	}
}

func TestSameListener(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"0.0.0.0:1", "127.0.0.1:1", true},
		{":1", "10.0.0.1:1", true},
		{"10.0.0.1:1", "10.0.0.2:1", false},
		{"10.0.0.1:1", "10.0.0.1:2", false},
		{"bad", "bad", false},
	} {
		if got := sameListener(tc.a, tc.b); got != tc.want {
			t.Errorf("sameListener(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

func TestSuggest(t *testing.T) {
	keys := []string{"node_id", "listen", "replication", "apply", "log"}
	for in, want := range map[string]string{"replicaton": "replication", "nodeid": "node_id", "lsiten": "listen",
		"aply": "apply", "lg": "log", "x": "", "zzz": "", "password": ""} {
		if got := suggest(in, keys); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}
