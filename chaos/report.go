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

// longestGap returns the longest gap between consecutive acknowledged
// writes that overlaps [from, to), and where it starts. times are the
// acknowledgement times, sorted; end (when the writers stopped) closes the
// last gap, so writes that never resume count as a stall until then.
func longestGap(times []time.Duration, end, from, to time.Duration) (gap, at time.Duration) {
	if len(times) == 0 {
		return 0, 0
	}
	point := func(j int) time.Duration {
		if j == len(times) {
			return end
		}
		return times[j]
	}
	// The first pair (j, j+1) whose end lies after from.
	k := sort.Search(len(times), func(i int) bool { return times[i] > from })
	j := max(k-1, 0)
	for ; j < len(times) && point(j) < to; j++ {
		if g := point(j+1) - point(j); g > gap {
			gap, at = g, point(j)
		}
	}
	return gap, at
}

// fillStalls sets each fault's Stall: the longest gap between acknowledged
// writes from its start to the next fault's start (the last one's: to end).
func fillStalls(recs []faultRecord, times []time.Duration, end time.Duration) {
	for i := range recs {
		to := end
		if i+1 < len(recs) {
			to = recs[i+1].Start
		}
		recs[i].Stall, _ = longestGap(times, end, recs[i].Start, to)
	}
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
