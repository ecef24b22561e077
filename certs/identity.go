package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
)

// Role is what a certificate's holder may do in the cluster. Every
// certificate Quire issues carries exactly one role and a name, bound
// together in one URI SAN, quire://ROLE/NAME (e.g. quire://agent/db1); the
// subject's OU repeats the role for people reading the certificate.
type Role string

// The roles.
const (
	// RoleOperator is a person or a script running the quire CLI: cluster
	// changes (members, K, sync set, settings, init) and reads.
	RoleOperator Role = "operator"
	// RoleManager is a Raft manager: it forwards calls to the leader, speaks
	// Raft with the other managers named in its peers and gives agents
	// their orders (fence, promote, repoint, drain).
	RoleManager Role = "manager"
	// RoleAgent is a node agent: it registers and heartbeats with the
	// managers as its own node, and streams the log from the primary agent
	// as its own node.
	RoleAgent Role = "agent"
)

// Roles lists every role.
var Roles = []Role{RoleOperator, RoleManager, RoleAgent}

// URIScheme is the scheme of the URI SAN that carries role and name.
const URIScheme = "quire"

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("certs: role %q is not allowed (allowed: operator, manager, agent)", s)
}

// IdentityURI is the URI SAN of a certificate for name in role.
func IdentityURI(role Role, name string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: string(role), Path: "/" + name}
}

// Identity is who a certificate names: its role and node (or operator)
// name, and its serial number (for revocation).
type Identity struct {
	Role   Role
	Name   string
	Serial *big.Int
}

// String is "role/name".
func (id Identity) String() string { return string(id.Role) + "/" + id.Name }

// ErrNoRole is wrapped by the error of a certificate that carries no Quire
// role: one issued before roles existed, or by another tool.
var ErrNoRole = errors.New("certificate carries no Quire role")

// IdentityOf reads the role and name of a certificate. A certificate
// without a quire:// URI SAN (issued before roles existed) or with more
// than one is refused with an error that says how to reissue it.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	var found []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == URIScheme {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("certs: %w: certificate CN=%q (serial %s) was issued before roles existed or by another tool; "+
			"reissue it with `quire certs issue --role operator|manager|agent --name NAME`", ErrNoRole, cert.Subject.CommonName, SerialString(cert.SerialNumber))
	case 1:
	default:
		return Identity{}, fmt.Errorf("certs: certificate CN=%q (serial %s) carries %d quire:// URIs; a certificate has exactly one role — reissue it with `quire certs issue`",
			cert.Subject.CommonName, SerialString(cert.SerialNumber), len(found))
	}
	u := found[0]
	role, err := ParseRole(u.Host)
	if err != nil {
		return Identity{}, fmt.Errorf("certs: certificate CN=%q (serial %s): URI %s: %w", cert.Subject.CommonName, SerialString(cert.SerialNumber), u, err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	if !nameRE.MatchString(name) || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return Identity{}, fmt.Errorf("certs: certificate CN=%q (serial %s): URI %s does not name a node (want quire://ROLE/NAME)",
			cert.Subject.CommonName, SerialString(cert.SerialNumber), u)
	}
	return Identity{Role: role, Name: name, Serial: cert.SerialNumber}, nil
}

// PeerIdentity reads the identity of the peer of a TLS connection: its
// verified leaf certificate.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, errors.New("certs: the peer presented no certificate")
	}
	return IdentityOf(cs.PeerCertificates[0])
}

// SerialString formats a serial number as revocation lists and `quire
// certs list` show it: lower-case hexadecimal.
func SerialString(n *big.Int) string {
	if n == nil {
		return "none"
	}
	return n.Text(16)
}

// RequirePeer makes a TLS configuration accept a peer only if check
// accepts its identity (after the chain is verified). It is how a client
// insists that it talks to a manager, or a server that it serves only
// certain names; check may be nil to require only a valid identity.
func RequirePeer(cfg *tls.Config, check func(Identity) error) {
	prev := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		id, err := PeerIdentity(cs)
		if err != nil {
			return err
		}
		if check != nil {
			return check(id)
		}
		return nil
	}
}

// WantRole is a check for RequirePeer: the peer's role is one of roles.
func WantRole(roles ...Role) func(Identity) error {
	return func(id Identity) error {
		for _, r := range roles {
			if id.Role == r {
				return nil
			}
		}
		return fmt.Errorf("certs: peer %s has role %s; expected %s", id.Name, id.Role, joinRoles(roles))
	}
}

func joinRoles(roles []Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, " or ")
}

// Holds reports whether dir already holds a certificate and key for name
// whose identity is role/name: what `quire certs issue --if-missing` keeps.
// A certificate issued before roles existed, or for another role, is not
// held (it must be issued again).
func Holds(dir, name string, role Role) bool {
	crt, err := tls.LoadX509KeyPair(CertFile(dir, name), KeyFile(dir, name))
	if err != nil || crt.Leaf == nil {
		return false
	}
	id, err := IdentityOf(crt.Leaf)
	return err == nil && id.Role == role && id.Name == name
}
