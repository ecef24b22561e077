package main

import (
	"strings"
	"testing"
)

func TestCompareChecksums(t *testing.T) {
	tables := []string{"sb0.sbtest1", "sb1.sbtest1"}
	for _, tc := range []struct {
		name      string
		got, want map[string]string
		differ    []string // tables the error must name; none: no error
	}{
		{"equal", map[string]string{"sb0.sbtest1": "1", "sb1.sbtest1": "2"}, map[string]string{"sb0.sbtest1": "1", "sb1.sbtest1": "2"}, nil},
		{"one differs", map[string]string{"sb0.sbtest1": "1", "sb1.sbtest1": "3"}, map[string]string{"sb0.sbtest1": "1", "sb1.sbtest1": "2"}, []string{"sb1.sbtest1"}},
		{"both differ", map[string]string{"sb0.sbtest1": "9", "sb1.sbtest1": "3"}, map[string]string{"sb0.sbtest1": "1", "sb1.sbtest1": "2"}, []string{"sb0.sbtest1", "sb1.sbtest1"}},
		{"missing on the replica", map[string]string{"sb0.sbtest1": "1"}, map[string]string{"sb0.sbtest1": "1", "sb1.sbtest1": "2"}, []string{"sb1.sbtest1"}},
		{"empty source checksum is still compared", map[string]string{"sb0.sbtest1": "1", "sb1.sbtest1": "2"}, map[string]string{"sb0.sbtest1": "1"}, []string{"sb1.sbtest1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := compareChecksums(tables, tc.got, tc.want)
			if len(tc.differ) == 0 {
				if err != nil {
					t.Fatalf("compareChecksums: %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("compareChecksums: nil, want an error naming %v", tc.differ)
			}
			for _, name := range tables {
				named := strings.Contains(err.Error(), name+":")
				want := strings.Contains(strings.Join(tc.differ, " "), name)
				if named != want {
					t.Errorf("error %q names %s: %v, want %v", err, name, named, want)
				}
			}
		})
	}
}

func TestRatio(t *testing.T) {
	for _, tc := range []struct {
		a, b, target float64
		want         string
	}{
		{1200, 1000, 1.2, "1.20× met"},
		{1190, 1000, 1.2, "1.19× MISSED"},
		{2500, 1000, 2.5, "2.50× met"},
		{500, 1000, 2.5, "0.50× MISSED"},
	} {
		if got := ratio(tc.a, tc.b, tc.target); got != tc.want {
			t.Errorf("ratio(%v, %v, %v) = %q, want %q", tc.a, tc.b, tc.target, got, tc.want)
		}
	}
}

func TestTableOrder(t *testing.T) {
	o := options{channels: []int{1, 8}, blocks: []int{1, 100}, threads: []int{0, 8}, modes: []string{"conservative", "optimistic"}}
	run, table := o.configs(), o.tableOrder()
	if len(run) != 7 || len(table) != 7 {
		t.Fatalf("%d configurations to run, %d in the table, want 3 MariaDB + 4 Quire", len(run), len(table))
	}
	if run[0].quire || !run[1].quire {
		t.Errorf("run order %v does not interleave MariaDB and Quire", run)
	}
	want := []string{
		"MariaDB slave_parallel_threads=0",
		"MariaDB slave_parallel_threads=8, conservative",
		"MariaDB slave_parallel_threads=8, optimistic",
		"Quire channels=1, block=1",
		"Quire channels=1, block=100",
		"Quire channels=8, block=1",
		"Quire channels=8, block=100",
	}
	for i, c := range table {
		if c.String() != want[i] {
			t.Errorf("table row %d is %s, want %s", i, c, want[i])
		}
	}
}
