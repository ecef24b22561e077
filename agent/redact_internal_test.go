package agent

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"": "",
		"agent: apply: Error 1062 (23000): Duplicate entry 'alice@example.com' for key 'email'":                                     "agent: apply: Error 1062 (23000): [message withheld",
		"SET GLOBAL read_only = ON: Error 1227 (42000): Access denied; you need (at least one of) the READ_ONLY ADMIN privilege(s)": "SET GLOBAL read_only = ON: Error 1227 (42000): [message withheld",
		"Error 1146: Table 'secret.t' doesn't exist":                                                                                "Error 1146: [message withheld",
		"ship: no message from the primary for 3s":                                                                                  "ship: no message from the primary for 3s",
		"dial tcp 10.0.0.1:7400: connect: connection refused":                                                                       "dial tcp 10.0.0.1:7400: connect: connection refused",
	} {
		got := redact(in)
		if !strings.HasPrefix(got, want) {
			t.Errorf("redact(%q) = %q, want prefix %q", in, got, want)
		}
		for _, secret := range []string{"alice@example.com", "READ_ONLY ADMIN", "secret.t"} {
			if strings.Contains(got, secret) {
				t.Errorf("redact(%q) keeps %q", in, secret)
			}
		}
	}
	st := Status{RoleError: "x: Error 1045 (28000): Access denied for user 'quire'", Apply: &ApplyStatus{
		LastError: "Error 1062 (23000): Duplicate entry 'k'",
		Errors:    []ApplyRecordError{{Seqno: 7, Error: "Error 1062 (23000): Duplicate entry 'k'"}},
		Channels:  []ApplyChannel{{Channel: 0, Stopped: &ApplyRecordError{Error: "Error 1062 (23000): Duplicate entry 'k'"}}},
	}}
	r := redactStatus(st)
	for _, s := range []string{r.RoleError, r.Apply.LastError, r.Apply.Errors[0].Error, r.Apply.Channels[0].Stopped.Error} {
		if strings.Contains(s, "Duplicate entry") || strings.Contains(s, "Access denied") {
			t.Errorf("not redacted: %q", s)
		}
	}
	if !strings.Contains(st.Apply.Errors[0].Error, "Duplicate entry") || !strings.Contains(st.Apply.Channels[0].Stopped.Error, "Duplicate entry") {
		t.Error("redactStatus changed its argument")
	}
}
