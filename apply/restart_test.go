package apply

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestPlanStart(t *testing.T) {
	row := func(ch, count int, layout string, seqno uint64) RestartRow {
		return RestartRow{Channel: ch, ChannelCount: count, Layout: layout, Seqno: seqno, GTID: "0-1-1"}
	}
	for _, tc := range []struct {
		name   string
		rows   []RestartRow
		n      int
		layout string
		reset  bool
		seqnos []uint64
		resume uint64
		err    string
		drain  bool
	}{
		{name: "fresh", n: 3, layout: "L", reset: true, seqnos: []uint64{0, 0, 0}, resume: 1},
		{name: "resume at min+1", n: 3, layout: "L",
			rows:   []RestartRow{row(0, 3, "L", 10), row(1, 3, "L", 7), row(2, 3, "L", 12)},
			seqnos: []uint64{10, 7, 12}, resume: 8},
		{name: "rows in any order", n: 2, layout: "L",
			rows:   []RestartRow{row(1, 2, "L", 5), row(0, 2, "L", 9)},
			seqnos: []uint64{9, 5}, resume: 6},
		{name: "new count after drain", n: 4, layout: "M",
			rows:  []RestartRow{row(0, 2, "L", 50), row(1, 2, "L", 50)},
			reset: true, seqnos: []uint64{50, 50, 50, 50}, resume: 51},
		{name: "new count, not drained", n: 4, layout: "M",
			rows: []RestartRow{row(0, 2, "L", 50), row(1, 2, "L", 40)},
			err:  "channel count changed from 2 to 4, but the restart rows are at different seqnos (40..50)", drain: true},
		{name: "new layout, not drained", n: 2, layout: "M",
			rows: []RestartRow{row(0, 2, "L", 50), row(1, 2, "L", 40)},
			err:  "layout changed", drain: true},
		{name: "new layout after drain", n: 2, layout: "M",
			rows:  []RestartRow{row(0, 2, "L", 50), row(1, 2, "L", 50)},
			reset: true, seqnos: []uint64{50, 50}, resume: 51},
		{name: "missing row", n: 3, layout: "L",
			rows: []RestartRow{row(0, 3, "L", 5), row(2, 3, "L", 5)},
			err:  "channel ids are not 0..1"},
		{name: "rows disagree on count", n: 2, layout: "L",
			rows: []RestartRow{row(0, 2, "L", 5), row(1, 3, "L", 5)},
			err:  "disagree"},
		{name: "too few rows for count", n: 3, layout: "L",
			rows: []RestartRow{row(0, 3, "L", 5), row(1, 3, "L", 5)},
			err:  "2 rows for channel count 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := planStart(tc.rows, tc.n, tc.layout)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				if tc.drain && (!errors.Is(err, ErrDrainFirst) || !strings.Contains(err.Error(), "run the drain with the old channel count")) {
					t.Fatalf("error %v does not ask for a drain", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.reset != tc.reset || p.resume != tc.resume || !slices.Equal(p.seqnos, tc.seqnos) {
				t.Fatalf("plan reset=%v resume=%d seqnos=%v, want %v %d %v", p.reset, p.resume, p.seqnos, tc.reset, tc.resume, tc.seqnos)
			}
		})
	}
}

func TestAlreadyApplied(t *testing.T) {
	rs := &runState{rows: []uint64{10, 7, 12}}
	for _, tc := range []struct {
		seqno uint64
		ch    int
		want  bool
		err   bool
	}{
		{7, 1, true, false},
		{8, 1, false, false},
		{12, 2, true, false},
		{11, 0, false, false},
		{13, SerialChannel, false, false},
		{9, SerialChannel, false, true}, // applied on two channels, not on one
	} {
		got, err := rs.alreadyApplied(tc.seqno, tc.ch)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("alreadyApplied(%d, %d) = %v, %v", tc.seqno, tc.ch, got, err)
		}
	}
	rs = &runState{rows: []uint64{10, 10}}
	if got, err := rs.alreadyApplied(10, SerialChannel); !got || err != nil {
		t.Errorf("serialized 10 with rows at 10: %v %v", got, err)
	}
}
