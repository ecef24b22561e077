package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of the times in /proc/<pid>/stat and /proc/stat
// (USER_HZ, 100 on every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// cpuSample is the CPU time used so far: by the replica's mariadbd, by the
// benchmark's own process (where Quire's applier runs), and by the whole
// machine.
type cpuSample struct {
	at         time.Time
	mariadbd   time.Duration
	self       time.Duration
	hostBusy   time.Duration // every CPU, not idle and not waiting for I/O
	hostIOWait time.Duration
	hostTotal  time.Duration
}

// cpuUse is the CPU used between two samples, each as a share of one CPU
// (1 = one core busy for the whole interval).
type cpuUse struct {
	mariadbd, self, hostBusy, hostIOWait float64
	cpus                                 int
}

// sampleCPU reads the CPU counters; pid is the replica's mariadbd. A
// counter it cannot read stays zero: the columns are evidence, not a
// result.
func sampleCPU(pid int) cpuSample {
	s := cpuSample{at: time.Now()}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// The command name, in parentheses, may hold spaces: count the
		// fields after its closing parenthesis. utime and stime are
		// fields 14 and 15, so the 12th and 13th after it.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				u, _ := strconv.ParseUint(f[11], 10, 64)
				k, _ := strconv.ParseUint(f[12], 10, 64)
				s.mariadbd = time.Duration(u+k) * clockTick
			}
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		// cpu user nice system idle iowait irq softirq steal ...
		f := strings.Fields(line)
		if len(f) > 8 && f[0] == "cpu" {
			var v [8]uint64
			for i := range v {
				v[i], _ = strconv.ParseUint(f[i+1], 10, 64)
			}
			busy := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
			s.hostBusy = time.Duration(busy) * clockTick
			s.hostIOWait = time.Duration(v[4]) * clockTick
			s.hostTotal = time.Duration(busy+v[3]+v[4]) * clockTick
		}
	}
	return s
}

// since returns the CPU used from s0 to s.
func (s cpuSample) since(s0 cpuSample) cpuUse {
	wall := s.at.Sub(s0.at).Seconds()
	if wall <= 0 {
		return cpuUse{}
	}
	u := cpuUse{
		mariadbd: (s.mariadbd - s0.mariadbd).Seconds() / wall,
		self:     (s.self - s0.self).Seconds() / wall,
		cpus:     cpuCount(),
	}
	if total := (s.hostTotal - s0.hostTotal).Seconds(); total > 0 {
		// Shares of all CPUs, scaled to CPUs.
		u.hostBusy = (s.hostBusy - s0.hostBusy).Seconds() / total * float64(u.cpus)
		u.hostIOWait = (s.hostIOWait - s0.hostIOWait).Seconds() / total * float64(u.cpus)
	}
	return u
}

// cpuCount is the number of CPUs /proc/stat counts.
func cpuCount() int {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 1
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		if len(line) > 3 && strings.HasPrefix(line, "cpu") && line[3] >= '0' && line[3] <= '9' {
			n++
		}
	}
	return max(n, 1)
}

// percent formats a share of one CPU as a percentage.
func percent(v float64) string { return strconv.FormatFloat(100*v, 'f', 0, 64) }
