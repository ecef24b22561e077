package apply

import (
	"strings"
	"testing"

	"github.com/quire-ha/quire/txlog"
)

func TestHashChannelStable(t *testing.T) {
	// FNV-1a 32 of the name, mod n. These values must never change: restart
	// rows depend on them.
	for _, tc := range []struct {
		shard string
		n     int
		want  int
	}{
		{"", 4, 1},  // offset basis 2166136261 % 4
		{"a", 4, 0}, // 0xe40c292c
		{"s1", 4, 1},
		{"s1", 1, 0},
		{"sales", 7, 3},
	} {
		if got := HashChannel(tc.shard, tc.n); got != tc.want {
			t.Errorf("HashChannel(%q, %d) = %d, want %d", tc.shard, tc.n, got, tc.want)
		}
	}
	for n := 1; n <= 16; n++ {
		for _, s := range []string{"s1", "s2", "db_x", "😀"} {
			if c := HashChannel(s, n); c < 0 || c >= n {
				t.Fatalf("HashChannel(%q, %d) = %d out of range", s, n, c)
			}
		}
	}
}

func TestNewShardMapValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  ShardConfig
		n    int
		err  string
	}{
		{"zero", ShardConfig{}, 4, ""},
		{"no channels", ShardConfig{}, 0, "at least 1"},
		{"empty schema", ShardConfig{Schemas: map[string]string{"": "x"}}, 2, "empty name"},
		{"empty group", ShardConfig{Groups: map[string][]string{"": {"a"}}}, 2, "empty shard name"},
		{"empty group member", ShardConfig{Groups: map[string][]string{"g": {""}}}, 2, "empty schema name"},
		{"two shards", ShardConfig{Schemas: map[string]string{"a": "x"}, Groups: map[string][]string{"y": {"a"}}}, 2, "schema a is in shard x and in shard y"},
		{"same shard twice", ShardConfig{Schemas: map[string]string{"a": "x"}, Groups: map[string][]string{"x": {"a"}}}, 2, ""},
		{"pin out of range", ShardConfig{Channels: map[string]int{"x": 2}}, 2, "pinned to channel 2, but there are 2 channels"},
		{"pin negative", ShardConfig{Channels: map[string]int{"x": -1}}, 2, "pinned to channel -1"},
		{"critical empty", ShardConfig{Critical: []string{""}}, 2, "critical: empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewShardMap(tc.cfg, tc.n)
			if tc.err == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

func TestShardMapLookups(t *testing.T) {
	m, err := NewShardMap(ShardConfig{
		Schemas:  map[string]string{"orders_eu": "orders"},
		Groups:   map[string][]string{"orders": {"orders_us"}, "cat": {"catalog", "prices"}},
		Critical: []string{"global"},
		Channels: map[string]int{"cat": 2},
	}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for schema, want := range map[string]string{"orders_eu": "orders", "orders_us": "orders", "prices": "cat", "other": "other"} {
		if got := m.Shard(schema); got != want {
			t.Errorf("Shard(%s) = %s, want %s", schema, got, want)
		}
	}
	if m.Channel("cat") != 2 || m.Channel("orders") != HashChannel("orders", 3) {
		t.Errorf("Channel: cat %d orders %d", m.Channel("cat"), m.Channel("orders"))
	}
	if !m.Critical("global") || m.Critical("orders") {
		t.Error("Critical wrong")
	}
	// The layout depends on everything that places records, and only on that.
	m2, _ := NewShardMap(ShardConfig{
		Schemas:  map[string]string{"orders_eu": "orders", "orders_us": "orders"},
		Groups:   map[string][]string{"cat": {"prices", "catalog"}},
		Critical: []string{"other"},
		Channels: map[string]int{"cat": 2},
	}, 3)
	if m.Layout() != m2.Layout() {
		t.Errorf("same placement, different layouts %s %s", m.Layout(), m2.Layout())
	}
	m3, _ := NewShardMap(ShardConfig{}, 3)
	m4, _ := NewShardMap(ShardConfig{}, 4)
	if m3.Layout() == m4.Layout() || m3.Layout() == m.Layout() {
		t.Error("different placements, same layout")
	}
}

func TestClassify(t *testing.T) {
	m, err := NewShardMap(ShardConfig{
		Groups:   map[string][]string{"g": {"a", "b"}},
		Critical: []string{"crit"},
	}, 4)
	if err != nil {
		t.Fatal(err)
	}
	with := func(r txlog.Record, f func(*txlog.Record)) txlog.Record { f(&r); return r }
	ddlGroup := with(synthDML(9, "s1"), func(r *txlog.Record) {
		r.Events = concat(synthGTID(9, gtidStandalone|gtidDDL|8), synthQuery("s1", "CREATE TABLE t (id INT)", nil))
	})
	myisam := with(synthDML(9, "s1"), func(r *txlog.Record) {
		r.Events = concat(synthGTID(9, 8), synthTableMap(1, "s1", "m"), synthRows(1, true), synthQuery("", "COMMIT", nil))
	})
	stmt := with(synthDML(9, "s1"), func(r *txlog.Record) {
		r.Events = concat(synthGTID(9, gtidTransactional|8), synthQuery("s1", "INSERT INTO t VALUES (1)", nil), synthXID())
	})
	begin := with(synthDML(9, "s1"), func(r *txlog.Record) {
		r.Events = concat(synthGTID(9, gtidTransactional|8), synthQuery("", "BEGIN", nil), synthTableMap(1, "s1", "t"), synthRows(1, true), synthXID())
	})
	for _, tc := range []struct {
		name      string
		rec       txlog.Record
		shard     string
		serialize bool
		reason    string
	}{
		{"one schema", synthDML(1, "s1"), "s1", false, ""},
		{"group", synthDML(1, "a", "b"), "g", false, ""},
		{"two shards", synthDML(1, "s1", "s2"), "", true, ReasonMultiShard},
		{"group and other", synthDML(1, "a", "s2"), "", true, ReasonMultiShard},
		{"critical", synthDML(1, "crit"), "crit", true, ReasonCritical},
		{"ddl flag", with(synthDML(1, "s1"), func(r *txlog.Record) { r.Flags |= txlog.FlagDDL }), "", true, ReasonDDL},
		{"unknown flag", with(synthDML(1, "s1"), func(r *txlog.Record) { r.Flags |= txlog.FlagUnknownSchema }), "", true, ReasonUnknownSchema},
		{"no schema", with(synthDML(1, "s1"), func(r *txlog.Record) { r.Schemas = nil }), "", true, ReasonNoSchema},
		{"empty schema name", with(synthDML(1, "s1"), func(r *txlog.Record) { r.Schemas = []string{""} }), "", true, ReasonUnknownSchema},
		{"multi flag one schema", with(synthDML(1, "s1"), func(r *txlog.Record) { r.Flags |= txlog.FlagMultiSchema }), "", true, ReasonInconsistent},
		{"events touch other schema", with(synthDML(1, "s2"), func(r *txlog.Record) { r.Schemas = []string{"s1"} }), "s1", true, ReasonInconsistent},
		{"ddl gtid flag only", ddlGroup, "s1", true, ReasonDDL},
		{"non-transactional", myisam, "s1", true, ReasonNonTransactional},
		{"statement event", stmt, "s1", true, ReasonStatement},
		{"BEGIN query is fine", begin, "s1", false, ""},
		{"bad checksum", with(synthDML(1, "s1"), func(r *txlog.Record) {
			r.Events = append([]byte(nil), r.Events...)
			r.Events[len(r.Events)-1] ^= 1
		}), "s1", true, ReasonUninspectable},
		{"truncated", with(synthDML(1, "s1"), func(r *txlog.Record) { r.Events = r.Events[:len(r.Events)-3] }), "s1", true, ReasonUninspectable},
		{"no format description", with(synthDML(1, "s1"), func(r *txlog.Record) { r.FormatDesc = nil }), "s1", true, ReasonUninspectable},
		{"no commit", with(synthDML(1, "s1"), func(r *txlog.Record) {
			r.Events = concat(synthGTID(1, gtidTransactional|8), synthTableMap(1, "s1", "t"), synthRows(1, true))
		}), "s1", true, ReasonInconsistent},
		{"no GTID event", with(synthDML(1, "s1"), func(r *txlog.Record) {
			r.Events = concat(synthTableMap(1, "s1", "t"), synthRows(1, true), synthXID())
		}), "s1", true, ReasonUninspectable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shard, ser, reason := Classify(&tc.rec, m)
			if shard != tc.shard || ser != tc.serialize || reason != tc.reason {
				t.Fatalf("Classify = (%q, %v, %q), want (%q, %v, %q)", shard, ser, reason, tc.shard, tc.serialize, tc.reason)
			}
		})
	}
}

// TestClassifyNeverPanics feeds Classify truncated and corrupted events:
// it must serialize, not crash.
func TestClassifyNeverPanics(t *testing.T) {
	m, _ := NewShardMap(ShardConfig{}, 2)
	base := synthDML(1, "s1")
	for cut := 0; cut < len(base.Events); cut++ {
		r := base
		r.Events = base.Events[:cut]
		if _, ser, _ := Classify(&r, m); !ser && cut != len(base.Events) {
			t.Fatalf("truncated at %d: not serialized", cut)
		}
	}
	for i := 0; i < len(base.Events); i++ {
		r := base
		r.Events = append([]byte(nil), base.Events...)
		r.Events[i] ^= 0x5a
		Classify(&r, m) // must not panic; the CRC catches most
	}
}
