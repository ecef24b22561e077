package main

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// Bad `quire channels --set-count` invocations are usage errors that name
// the problem, and none of them reaches an agent.
func TestChannelsSetCountFlags(t *testing.T) {
	t.Setenv("QUIRE_TLS_CA", "")
	t.Setenv("QUIRE_TLS_CERT", "")
	t.Setenv("QUIRE_TLS_KEY", "")
	for _, tc := range []struct {
		args    []string
		mention string
	}{
		{[]string{"--set-count", "2", "--insecure"}, "--agent is required"},
		{[]string{"--agent", "127.0.0.1:1", "--set-count", "0", "--insecure"}, "0 is out of range (1..256)"},
		{[]string{"--agent", "127.0.0.1:1", "--set-count", "257", "--insecure"}, "257 is out of range"},
		{[]string{"--agent", "127.0.0.1:1", "--set-count", "-1", "--insecure"}, "out of range"},
		{[]string{"--agent", "127.0.0.1:1", "--set-count", "two", "--insecure"}, "invalid value"},
		{[]string{"--agent", "http://127.0.0.1:1", "--set-count", "2", "--insecure"}, "gRPC address"},
		{[]string{"--agent", "db2", "--set-count", "2", "--insecure"}, "not host:port"},
		{[]string{"--agent", "127.0.0.1:1", "--set-count", "2"}, "--tls-ca, --tls-cert and --tls-key"},
		{[]string{"--agent", "127.0.0.1:1", "--set-count", "2", "--insecure", "--tls-ca", "ca.crt"}, "choose one"},
		{[]string{"--agent", "127.0.0.1:1", "--set-count", "2", "--insecure", "--timeout", "0s"}, "not positive"},
		{[]string{"--agent", "127.0.0.1:1", "--set-count", "2", "--insecure", "extra"}, "unexpected argument"},
	} {
		err := run(append([]string{"channels"}, tc.args...), io.Discard, io.Discard)
		if !errors.Is(err, errUsage) {
			t.Errorf("quire channels %s: %v, want a usage error", strings.Join(tc.args, " "), err)
			continue
		}
		if !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("quire channels %s: %q does not mention %q", strings.Join(tc.args, " "), err, tc.mention)
		}
	}
	// A well-formed call to an agent that is not there fails, and is not a
	// usage error.
	err := run([]string{"channels", "--agent", "127.0.0.1:1", "--set-count", "2", "--insecure", "--timeout", "2s"}, io.Discard, io.Discard)
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), "agent 127.0.0.1:1") {
		t.Fatalf("set-count against no agent: %v", err)
	}
}
