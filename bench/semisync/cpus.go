package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
)

// cpuSplit is -split-cpus: it stands in for separate hosts on a machine
// with two CPUs. The primary's mariadbd and the sysbench clients run on
// CPU 0, the replicas' mariadbd on CPU 1, and this process (the three
// agents in Quire modes, only waiting in native ones) on one of them.
// With the agents beside the primary, the replicas' agents take CPU from
// the primary's host as they would not on separate hosts; beside the
// replicas, the primary's agent costs the primary's host nothing. The two
// runs bracket what separate hosts would show.
type cpuSplit struct {
	on                    bool
	primary, replica, own int
}

var split cpuSplit

const (
	agentsOnPrimary  = "agents-on-primary"
	agentsOnReplicas = "agents-on-replicas"
)

// parseSplit reads -split-cpus.
func parseSplit(s string) (cpuSplit, error) {
	switch s {
	case "":
		return cpuSplit{}, nil
	case agentsOnPrimary, agentsOnReplicas:
	default:
		return cpuSplit{}, fmt.Errorf("-split-cpus %q: want %s or %s", s, agentsOnPrimary, agentsOnReplicas)
	}
	if runtime.NumCPU() < 2 {
		return cpuSplit{}, fmt.Errorf("-split-cpus needs at least 2 CPUs, this machine has %d", runtime.NumCPU())
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return cpuSplit{}, fmt.Errorf("-split-cpus needs taskset (Debian: util-linux): %w", err)
	}
	c := cpuSplit{on: true, primary: 0, replica: 1, own: 0}
	if s == agentsOnReplicas {
		c.own = 1
	}
	return c, nil
}

// pinSelf binds every thread of this process to its CPU; threads started
// later inherit it.
func (c cpuSplit) pinSelf() error {
	if !c.on {
		return nil
	}
	out, err := exec.Command("taskset", "-a", "-p", "-c", strconv.Itoa(c.own), strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset this process to CPU %d: %v: %s", c.own, err, out)
	}
	return nil
}

// command returns the program and arguments that run path with args on
// cpu, or unchanged when the split is off.
func (c cpuSplit) command(cpu int, path string, args ...string) (string, []string) {
	if !c.on {
		return path, args
	}
	return "taskset", append([]string{"-c", strconv.Itoa(cpu), path}, args...)
}
