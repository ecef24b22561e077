package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseCLIConfig(t *testing.T) {
	for _, tc := range []struct {
		name, in, err string
		want          cliConfig
	}{
		{name: "empty", in: ""},
		{name: "full", in: "managers: [a:1, ' b:2 ']\ntls: {ca: ca.crt, cert: /abs/op.crt, key: op.key}\n",
			want: cliConfig{Managers: []string{"a:1", "b:2"}}},
		{name: "insecure", in: "managers: [a:1]\ninsecure: true\n", want: cliConfig{Managers: []string{"a:1"}, Insecure: true}},
		{name: "unknown key", in: "manager: [a:1]\n", err: "field manager not found"},
		{name: "bad address", in: "managers: [nohost]\n", err: `managers[0] = "nohost": want host:port`},
		{name: "insecure and tls", in: "insecure: true\ntls: {ca: x}\n", err: "choose one"},
		{name: "not yaml", in: "managers: [\n", err: "/etc/q/cli.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseCLIConfig([]byte(tc.in), "/etc/q/cli.yaml")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(c.Managers, ",") != strings.Join(tc.want.Managers, ",") || c.Insecure != tc.want.Insecure {
				t.Fatalf("got %+v, want %+v", c, tc.want)
			}
			if tc.name == "full" && (c.TLS.CA != "/etc/q/ca.crt" || c.TLS.Cert != "/abs/op.crt" || c.TLS.Key != "/etc/q/op.key") {
				t.Fatalf("TLS paths %+v: relative ones must be taken from the file's directory", c.TLS)
			}
		})
	}
}

// TestClusterFlagsPrecedence: flags and environment win over the file;
// a named file that is missing is an error, the per-user default is not.
func TestClusterFlagsPrecedence(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "nothing"))
	t.Setenv("HOME", filepath.Join(dir, "nothing"))
	t.Setenv("QUIRE_CONFIG", "")
	file := filepath.Join(dir, "cli.yaml")
	if err := os.WriteFile(file, []byte("managers: [f:1, f:2]\ntls: {ca: ca, cert: c, key: k}\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	f := &clusterFlags{config: file}
	if err := f.applyConfig(); err != nil {
		t.Fatal(err)
	}
	if f.managers != "f:1,f:2" || f.ca != filepath.Join(dir, "ca") || f.key != filepath.Join(dir, "k") {
		t.Fatalf("from --config: %+v", f)
	}

	f = &clusterFlags{config: file, managers: "flag:1", insecure: true}
	if err := f.applyConfig(); err != nil {
		t.Fatal(err)
	}
	if f.managers != "flag:1" || !f.insecure || f.ca != "" {
		t.Fatalf("flags must win: %+v", f)
	}

	t.Setenv("QUIRE_CONFIG", file)
	f = &clusterFlags{}
	if err := f.applyConfig(); err != nil || f.managers != "f:1,f:2" {
		t.Fatalf("from QUIRE_CONFIG: %+v, %v", f, err)
	}

	t.Setenv("QUIRE_CONFIG", filepath.Join(dir, "missing.yaml"))
	if err := (&clusterFlags{}).applyConfig(); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("a named missing file: err = %v", err)
	}

	t.Setenv("QUIRE_CONFIG", "")
	f = &clusterFlags{}
	if err := f.applyConfig(); err != nil || f.managers != "" {
		t.Fatalf("no file anywhere: %+v, %v", f, err)
	}
	t.Setenv("XDG_CONFIG_HOME", dir)
	if err := os.MkdirAll(filepath.Join(dir, "quire"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "quire", "cli.yaml"), []byte("managers: [d:1]\ninsecure: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f = &clusterFlags{}
	if err := f.applyConfig(); err != nil || f.managers != "d:1" || !f.insecure {
		t.Fatalf("per-user default: %+v, %v", f, err)
	}
}
