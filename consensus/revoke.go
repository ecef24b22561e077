package consensus

import (
	"math/big"
	"slices"
	"strings"
	"time"
)

// MaxRevoked bounds the revocation list.
const MaxRevoked = 10000

// RevokedCert is one revoked certificate.
type RevokedCert struct {
	// Serial is the certificate's serial number, lower-case hexadecimal
	// without leading zeros (certs.SerialString).
	Serial string `json:"serial"`
	// Name is the certificate's name, for people (the serial decides).
	Name   string    `json:"name,omitempty"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// RevokeCertificate adds a certificate to the revocation list. Revoking a
// serial twice changes nothing.
type RevokeCertificate struct {
	Cert RevokedCert `json:"cert"`
}

// Type implements [Command].
func (RevokeCertificate) Type() CommandType { return TypeRevokeCertificate }

// NormalizeSerial returns serial as the list keeps it: hexadecimal, lower
// case, no leading zeros; colons and a 0x prefix (as openssl and other
// tools print serials) are accepted. ok is false for anything else.
func NormalizeSerial(serial string) (string, bool) {
	s := strings.TrimPrefix(strings.ToLower(strings.ReplaceAll(strings.TrimSpace(serial), ":", "")), "0x")
	if s == "" || len(s) > 64 {
		return "", false
	}
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 {
		return "", false
	}
	return n.Text(16), true
}

func (c RevokeCertificate) apply(s *State) *ValidationError {
	serial, ok := NormalizeSerial(c.Cert.Serial)
	switch {
	case !ok:
		return invalid("cert.serial", c.Cert.Serial, "is not a certificate serial number (hexadecimal, as `quire certs revoke --cert FILE` reads it)")
	case c.Cert.By == "":
		return invalid("cert.by", c.Cert.By, "is empty")
	case c.Cert.At.IsZero():
		return invalid("cert.at", c.Cert.At, "is zero")
	case len(c.Cert.Name) > 64 || len(c.Cert.Reason) > 256:
		return invalid("cert.reason", c.Cert.Reason, "name or reason too long (at most 64 and 256 bytes)")
	}
	if slices.ContainsFunc(s.Revoked, func(r RevokedCert) bool { return r.Serial == serial }) {
		return nil
	}
	if len(s.Revoked) >= MaxRevoked {
		return invalid("cert.serial", serial, "the revocation list holds %d certificates, the most it may; make a new CA", MaxRevoked)
	}
	r := c.Cert
	r.Serial, r.At = serial, normTime(r.At)
	s.Revoked = append(s.Revoked, r)
	return nil
}

// RevokedSerials returns the serials of the revocation list.
func (s State) RevokedSerials() []string {
	out := make([]string, len(s.Revoked))
	for i, r := range s.Revoked {
		out[i] = r.Serial
	}
	return out
}
