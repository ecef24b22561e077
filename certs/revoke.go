package certs

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/quire-ha/quire/internal/statefile"
)

// RevocationList is the set of revoked certificate serials a process
// refuses in every TLS handshake (CheckRevoked). The managers hold the list
// in Raft (`quire certs revoke`); each process keeps a copy, updated as
// the list changes. It is safe for concurrent use.
type RevocationList struct {
	mu  sync.RWMutex
	set map[string]bool
}

// NewRevocationList returns an empty list.
func NewRevocationList() *RevocationList { return &RevocationList{set: map[string]bool{}} }

// Set replaces the list with serials (SerialString form). It reports
// whether the list changed.
func (l *RevocationList) Set(serials []string) bool {
	next := make(map[string]bool, len(serials))
	for _, s := range serials {
		next[s] = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	changed := len(next) != len(l.set)
	for s := range next {
		changed = changed || !l.set[s]
	}
	l.set = next
	return changed
}

// Serials returns the list, sorted.
func (l *RevocationList) Serials() []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]string, 0, len(l.set))
	for s := range l.set {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Revoked reports whether serial (SerialString form) is on the list.
func (l *RevocationList) Revoked(serial string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.set[serial]
}

// Check refuses a connection whose peer's certificate chain holds a revoked
// certificate.
func (l *RevocationList) Check(cs tls.ConnectionState) error {
	for _, c := range cs.PeerCertificates {
		if s := SerialString(c.SerialNumber); l.Revoked(s) {
			return fmt.Errorf("certs: the certificate CN=%q serial %s is revoked (quire certs revoked lists it); issue a new one with `quire certs issue`", c.Subject.CommonName, s)
		}
	}
	return nil
}

// CheckRevoked makes cfg refuse peers whose certificates l revokes, in
// every handshake (server and client side).
func CheckRevoked(cfg *tls.Config, l *RevocationList) {
	prev := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := l.Check(cs); err != nil {
			return err
		}
		if prev != nil {
			return prev(cs)
		}
		return nil
	}
}

// Load reads a list Save wrote; a missing file is an empty list.
func (l *RevocationList) Load(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("certs: revocation list: %w", err)
	}
	var serials []string
	if err := json.Unmarshal(b, &serials); err != nil {
		return fmt.Errorf("certs: revocation list %s: %w", path, err)
	}
	l.Set(serials)
	return nil
}

// Save writes the list to path (mode 0600), atomically.
func (l *RevocationList) Save(path string) error {
	b, err := json.Marshal(l.Serials())
	if err != nil {
		return fmt.Errorf("certs: revocation list: %w", err)
	}
	if err := statefile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("certs: revocation list: %w", err)
	}
	return nil
}
