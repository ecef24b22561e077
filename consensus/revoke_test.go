package consensus

import (
	"strings"
	"testing"
	"time"
)

func TestNormalizeSerial(t *testing.T) {
	for in, want := range map[string]string{
		"abc": "abc", "0ABC": "abc", "0x0abc": "abc", "0A:BC": "abc", " 1f ": "1f",
		"": "", "0": "", "xyz": "", "-1": "", strings.Repeat("f", 65): "",
	} {
		got, ok := NormalizeSerial(in)
		if got != want || ok != (want != "") {
			t.Errorf("NormalizeSerial(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestRevokeCertificate(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := mustApply(t, NewState(), RevokeCertificate{RevokedCert{Serial: "0A:BC", Name: "db2", By: "alice", At: t0}})
	if got := s.RevokedSerials(); len(got) != 1 || got[0] != "abc" {
		t.Fatalf("revoked %v", got)
	}
	// Twice: no change; the state survives encode/decode through the FSM's
	// command path.
	s2 := mustApply(t, s, RevokeCertificate{RevokedCert{Serial: "abc", By: "bob", At: t0}})
	if len(s2.Revoked) != 1 || s2.Revoked[0].By != "alice" {
		t.Fatalf("second revocation changed the list: %+v", s2.Revoked)
	}
	for _, bad := range []RevokedCert{{Serial: "zz", By: "a", At: t0}, {Serial: "ab", At: t0}, {Serial: "ab", By: "a"}} {
		if _, err := s.Apply(RevokeCertificate{bad}); err == nil {
			t.Errorf("revocation %+v accepted", bad)
		}
	}
	b, err := Encode(RevokeCertificate{RevokedCert{Serial: "ff", By: "a", At: t0}})
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := Decode(b)
	if err != nil || cmd.(RevokeCertificate).Cert.Serial != "ff" {
		t.Fatalf("decode: %+v %v", cmd, err)
	}
	c := s.Clone()
	c.Revoked[0].Name = "changed"
	if s.Revoked[0].Name != "db2" {
		t.Error("Clone shares the revocation list")
	}
}
