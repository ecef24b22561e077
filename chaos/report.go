package main

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// stallTolerance: a write acknowledged this long after a fault started
// still counts as before it (the commit was on its way when the fault hit).
const stallTolerance = 100 * time.Millisecond

// gap is a time without acknowledged writes.
type gap struct {
	from, to time.Duration
	fault    int // the index of the fault it is blamed on, -1 for none
}

func (g gap) length() time.Duration { return g.to - g.from }

// stalls blames every gap between consecutive acknowledged writes on a
// fault and returns, per fault, its longest gap, the longest gap of all,
// and every gap of at least long, in order. times are the acknowledgement times, sorted; end (when the writers
// stopped) closes the last gap, so writes that never resume count as a
// stall until then; starts are the faults' start times, sorted. A gap is
// blamed on the first fault that started inside it (or at most
// stallTolerance before it), else on the last fault before it.
func stalls(times []time.Duration, end time.Duration, starts []time.Duration, long time.Duration) (perFault []time.Duration, longest gap, longGaps []gap) {
	perFault = make([]time.Duration, len(starts))
	longest.fault = -1
	for j := range times {
		g := gap{from: times[j], to: end}
		if j+1 < len(times) {
			g.to = times[j+1]
		}
		if g.length() <= 0 {
			continue
		}
		i := sort.Search(len(starts), func(i int) bool { return starts[i] >= g.from-stallTolerance })
		switch {
		case i < len(starts) && starts[i] < g.to:
			g.fault = i
		default:
			g.fault = i - 1 // -1: before the first fault
		}
		if g.fault >= 0 && g.length() > perFault[g.fault] {
			perFault[g.fault] = g.length()
		}
		if g.length() > longest.length() {
			longest = g
		}
		if g.length() >= long {
			longGaps = append(longGaps, g)
		}
	}
	return perFault, longest, longGaps
}

// longStall is the shortest stall that the report lists one by one.
const longStall = 5 * time.Second

// fillStalls sets each fault's Stall (see stalls) and returns the longest
// gap and the gaps of at least longStall.
func fillStalls(recs []faultRecord, times []time.Duration, end time.Duration) (gap, []gap) {
	starts := make([]time.Duration, len(recs))
	for i, r := range recs {
		starts[i] = r.Start
	}
	per, longest, long := stalls(times, end, starts, longStall)
	for i := range recs {
		recs[i].Stall = per[i]
	}
	return longest, long
}

// printLongStalls lists the long stalls: when, which fault they are blamed
// on, and the faults that came while writes stood still (a stall that only
// a later fault ends, e.g. a restart of the primary's agent, shows a
// cluster that was stuck until then).
func printLongStalls(w io.Writer, recs []faultRecord, gaps []gap, end time.Duration) {
	if len(gaps) == 0 {
		return
	}
	fmt.Fprintf(w, "write stalls of %s or more:\n", secs(longStall))
	for _, g := range gaps {
		fmt.Fprintf(w, "  %7.1f s to %7.1f s  %8s  blamed on %s", g.from.Seconds(), g.to.Seconds(), secs(g.length()), faultName(recs, g.fault))
		if g.to >= end {
			fmt.Fprint(w, "; writes never resumed")
		}
		var during []string
		for i, r := range recs {
			if i != g.fault && r.Start > g.from && r.Start < g.to {
				during = append(during, fmt.Sprintf("#%d %s %s", r.N, r.Kind, r.Target))
			}
		}
		if len(during) > 0 {
			fmt.Fprintf(w, "\n      faults while it lasted: %s", strings.Join(during, ", "))
		}
		fmt.Fprintln(w)
	}
}

// faultName names fault i of recs.
func faultName(recs []faultRecord, i int) string {
	if i < 0 || i >= len(recs) {
		return "no fault (before the first)"
	}
	r := recs[i]
	return fmt.Sprintf("#%d %s %s (%s) at %.1f s", r.N, r.Kind, r.Target, r.Role, r.Start.Seconds())
}

// kindRow is one row of the table of faults by kind.
type kindRow struct {
	label  string
	count  int
	failed int
	stall  time.Duration
	worst  int // the fault with the longest stall
}

// byKind groups fault records by label, in a fixed order of kinds.
func byKind(recs []faultRecord) []kindRow {
	idx := map[string]int{}
	var rows []kindRow
	for _, r := range recs {
		l := r.label()
		i, ok := idx[l]
		if !ok {
			i = len(rows)
			idx[l] = i
			rows = append(rows, kindRow{label: l})
		}
		row := &rows[i]
		row.count++
		if r.Err != "" {
			row.failed++
		}
		if row.count == 1 || r.Stall > row.stall {
			row.stall, row.worst = r.Stall, r.N
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].label < rows[j].label })
	return rows
}

// printTable prints the faults by kind and the totals.
func printTable(w io.Writer, recs []faultRecord) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault kind\tcount\tfailed\tlongest write stall after it\tafter fault\t")
	var n, failed int
	var stall time.Duration
	worst := 0
	for i, row := range byKind(recs) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t#%d\t\n", row.label, row.count, row.failed, secs(row.stall), row.worst)
		n += row.count
		failed += row.failed
		if i == 0 || row.stall > stall {
			stall, worst = row.stall, row.worst
		}
	}
	fmt.Fprintf(tw, "all faults\t%d\t%d\t%s\t#%d\t\n", n, failed, secs(stall), worst)
	tw.Flush()
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func stamp(d time.Duration) string { return fmt.Sprintf("[%6.1fs]", d.Seconds()) }

// logLine matches a log/slog text line's level and message.
var logLine = regexp.MustCompile(`level=(WARN|ERROR) msg=("(?:[^"\\]|\\.)*"|\S+)`)

// logSummary is one distinct warning or error message of a log.
type logSummary struct {
	level, msg string
	count      int
	last       string // the last line with it
}

// summarizeLog counts a log's warnings and errors by message, most
// frequent first.
func summarizeLog(text string) []logSummary {
	idx := map[string]int{}
	var out []logSummary
	for _, line := range strings.Split(text, "\n") {
		m := logLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key := m[1] + " " + m[2]
		i, ok := idx[key]
		if !ok {
			i = len(out)
			idx[key] = i
			out = append(out, logSummary{level: m[1], msg: m[2]})
		}
		out[i].count++
		out[i].last = line
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].count > out[j].count })
	return out
}

// topErrors returns the n most frequent writer errors as lines.
func topErrors(errs map[string]int, n int) []string {
	type e struct {
		msg string
		n   int
	}
	var es []e
	for m, c := range errs {
		es = append(es, e{m, c})
	}
	sort.Slice(es, func(i, j int) bool {
		if es[i].n != es[j].n {
			return es[i].n > es[j].n
		}
		return es[i].msg < es[j].msg
	})
	var lines []string
	for i, x := range es {
		if i == n {
			lines = append(lines, fmt.Sprintf("… and %d other messages", len(es)-n))
			break
		}
		lines = append(lines, fmt.Sprintf("%6d× %s", x.n, x.msg))
	}
	return lines
}
