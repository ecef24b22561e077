package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const leak = "correct-horse-battery-staple"

// TestSecretRedaction prints, marshals and logs a Secret, alone and inside
// the configuration, every way we can think of, and checks the value never
// shows.
func TestSecretRedaction(t *testing.T) {
	s := NewSecret(leak)
	if s.Reveal() != leak || !s.IsSet() {
		t.Fatal("Reveal does not return the value")
	}
	if (Secret{}).IsSet() || (Secret{}).Reveal() != "" || NewSecret("").IsSet() {
		t.Fatal("zero or empty Secret counts as set")
	}
	cfg := defaultAgent()
	cfg.MySQL.Password = s
	type private struct {
		name string
		pw   Secret
	}
	values := map[string]any{
		"secret":          s,
		"pointer":         &s,
		"agent":           *cfg,
		"agent pointer":   cfg,
		"mysql":           cfg.MySQL,
		"unexported":      private{"x", s},
		"slice":           []Secret{s},
		"map":             map[string]Secret{"pw": s},
		"interface slice": []any{s},
	}

	check := func(t *testing.T, what, out string, wantRedacted bool) {
		t.Helper()
		if strings.Contains(out, leak) {
			t.Errorf("%s shows the password: %s", what, out)
		}
		if wantRedacted && !strings.Contains(out, redacted) {
			t.Errorf("%s does not say %s: %s", what, redacted, out)
		}
	}
	for name, v := range values {
		t.Run(name, func(t *testing.T) {
			// Reflection on an unexported field bypasses every method; the
			// pointer inside Secret keeps the value out of sight anyway.
			visible := name != "unexported"
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3v"} {
				check(t, "fmt "+verb, fmt.Sprintf(verb, v), visible)
			}
			check(t, "fmt.Sprint", fmt.Sprint(v), visible)
			check(t, "fmt.Sprintln", fmt.Sprintln(v), visible)

			b, err := json.Marshal(v)
			if err == nil {
				check(t, "json", string(b), visible)
			}
			y, err := yaml.Marshal(v)
			if err == nil {
				check(t, "yaml", string(y), false)
			}
			for _, h := range []struct {
				name string
				new  func(*bytes.Buffer) slog.Handler
			}{
				{"slog text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
				{"slog json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
			} {
				var buf bytes.Buffer
				log := slog.New(h.new(&buf))
				log.Info("loaded", "v", v)
				log.Info("loaded", slog.Any("v", v))
				log.With("v", v).Info("with")
				log.WithGroup("g").Info("group", "v", v)
				check(t, h.name, buf.String(), visible)
			}
		})
	}
	// The direct methods.
	if s.String() != redacted || s.GoString() != redacted {
		t.Error("String/GoString")
	}
	if b, _ := s.MarshalJSON(); string(b) != `"[redacted]"` {
		t.Errorf("MarshalJSON = %s", b)
	}
	if v := s.LogValue(); v.String() != redacted {
		t.Errorf("LogValue = %v", v)
	}
}

// writeFile writes data to dir/name with exactly mode perm.
func writeFile(t *testing.T, dir, name, data string, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil { // WriteFile's mode is subject to umask
		t.Fatal(err)
	}
	return p
}

// TestPasswordFileMode checks the mode rule on real files.
func TestPasswordFileMode(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o200, true}, // unreadable to us unless root; see below
		{0o644, false},
		{0o640, false},
		{0o604, false},
		{0o660, false},
		{0o606, false},
		{0o610, false},
	} {
		t.Run(fmt.Sprintf("%04o", tc.mode), func(t *testing.T) {
			dir := t.TempDir()
			pw := writeFile(t, dir, "mysql.password", leak+"\n", tc.mode)
			name := filepath.Join(dir, "agent.yaml")
			y := "node_id: db1\ndata_dir: data\nmysql:\n  password_file: mysql.password\ntls: {insecure_plaintext: true}\n"
			cfg, err := ParseAgent([]byte(y), name)
			if tc.mode == 0o200 {
				// Write-only: refused by the kernel unless we run as root.
				if err == nil && cfg.MySQL.Password.Reveal() != leak {
					t.Fatal("wrong password")
				}
				if err != nil {
					checkErrs(t, name, err, []wantErr{{4, "mysql.password_file", "cannot read " + pw + ": permission denied"}})
				}
				return
			}
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.MySQL.Password.Reveal() != leak {
					t.Fatalf("password %q, want the file's first line", cfg.MySQL.Password.Reveal())
				}
				if cfg.MySQL.PasswordFile != pw || cfg.DataDir != filepath.Join(dir, "data") {
					t.Errorf("paths not resolved: %q %q", cfg.MySQL.PasswordFile, cfg.DataDir)
				}
				return
			}
			checkErrs(t, name, err, []wantErr{{4, "mysql.password_file",
				fmt.Sprintf("mysql.password_file: %s has mode %04o, so group or other may read it; run chmod 600 %s", pw, tc.mode, pw)}})
		})
	}
	t.Run("missing", func(t *testing.T) {
		dir := t.TempDir()
		name := filepath.Join(dir, "agent.yaml")
		y := "node_id: db1\ndata_dir: data\nmysql: {password_file: nope}\ntls: {insecure_plaintext: true}\n"
		_, err := ParseAgent([]byte(y), name)
		checkErrs(t, name, err, []wantErr{{3, "mysql.password_file", filepath.Join(dir, "nope") + " does not exist"}})
	})
	t.Run("too large", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, "big", strings.Repeat("x", maxPasswordFile+1), 0o600)
		name := filepath.Join(dir, "agent.yaml")
		y := "node_id: db1\ndata_dir: data\nmysql: {password_file: big}\ntls: {insecure_plaintext: true}\n"
		_, err := ParseAgent([]byte(y), name)
		checkErrs(t, name, err, []wantErr{{3, "mysql.password_file", "is larger than 4096 bytes"}})
	})
}

// TestPasswordEnv checks password_env against the real environment.
func TestPasswordEnv(t *testing.T) {
	const y = "node_id: db1\ndata_dir: /d\nmysql: {password_env: QUIRE_CONFIG_TEST_PW}\ntls: {insecure_plaintext: true}\n"
	t.Setenv("QUIRE_CONFIG_TEST_PW", leak)
	cfg, err := ParseAgent([]byte(y), "agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MySQL.Password.Reveal() != leak {
		t.Fatal("password not taken from the environment")
	}

	t.Setenv("QUIRE_CONFIG_TEST_PW", "")
	_, err = ParseAgent([]byte(y), "agent.yaml")
	checkErrs(t, "agent.yaml", err, []wantErr{{3, "mysql.password_env", "environment variable QUIRE_CONFIG_TEST_PW is empty"}})

	os.Unsetenv("QUIRE_CONFIG_TEST_PW") // t.Setenv restores it afterwards
	_, err = ParseAgent([]byte(y), "agent.yaml")
	checkErrs(t, "agent.yaml", err, []wantErr{{3, "mysql.password_env", "environment variable QUIRE_CONFIG_TEST_PW is not set"}})
}
