package config

import (
	"os"
	"strings"
	"testing"
)

// fuzzSeeds adds the examples and every table case as seeds.
func fuzzSeeds(f *testing.F, example string, cases []string) {
	if b, err := os.ReadFile(example); err == nil {
		f.Add(b)
	}
	for _, c := range cases {
		f.Add([]byte(c))
	}
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("a: &a\n  b: *a\n"))
	f.Add([]byte("? [a, b]\n: 1\n"))
	f.Add([]byte("apply:\n  shard_map: {? [x]: y}\n"))
}

// checkParseResult checks the contract of ParseAgent and ParseManager: a
// config or an error, never both; every problem is an *Error naming the file.
func checkParseResult(t *testing.T, cfgNil bool, err error) {
	if cfgNil == (err == nil) {
		t.Fatalf("config nil=%v with error %v", cfgNil, err)
	}
	if err == nil {
		return
	}
	errs := Errors(err)
	if len(errs) == 0 {
		t.Fatalf("error without problems: %v", err)
	}
	for i, e := range errs {
		if e.File != "fuzz.yaml" || e.Msg == "" || !strings.HasPrefix(e.Error(), "fuzz.yaml") {
			t.Fatalf("bad problem %+v", e)
		}
		if i > 0 && e.Line < errs[i-1].Line {
			t.Fatalf("problems not ordered by line: %v", err)
		}
	}
}

func FuzzParseAgent(f *testing.F) {
	var cases []string
	for _, c := range badAgents {
		cases = append(cases, c.yaml)
	}
	fuzzSeeds(f, "../deploy/examples/agent.yaml", cases)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseAgent(data, "fuzz.yaml")
		checkParseResult(t, cfg == nil, err)
	})
}

func FuzzParseManager(f *testing.F) {
	var cases []string
	for _, c := range badManagers {
		cases = append(cases, c.yaml)
	}
	fuzzSeeds(f, "../deploy/examples/manager.yaml", cases)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseManager(data, "fuzz.yaml")
		checkParseResult(t, cfg == nil, err)
	})
}
