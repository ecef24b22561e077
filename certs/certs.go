// Package certs creates the certificate authority and node certificates that
// Quire's processes use for mutual TLS, and builds tls.Configs from them.
//
// Every node certificate is valid for both server and client authentication:
// agents and managers dial each other as well as serve. Keys are ECDSA P-256
// and are written with mode 0600.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/quire-ha/quire/internal/statefile"
)

// File names inside a certificate directory.
const (
	CACert = "ca.crt"
	CAKey  = "ca.key"
)

// CertFile and KeyFile name a node's certificate and key in a directory.
func CertFile(dir, name string) string { return filepath.Join(dir, name+".crt") }

// KeyFile names a node's private key in a directory.
func KeyFile(dir, name string) string { return filepath.Join(dir, name+".key") }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// ValidityCA and ValidityNode are how long new certificates are valid.
var (
	ValidityCA   = 10 * 365 * 24 * time.Hour
	ValidityNode = 2 * 365 * 24 * time.Hour
)

// InitCA creates a new CA in dir. It refuses to overwrite an existing CA.
func InitCA(dir, commonName string) error {
	if _, err := os.Stat(filepath.Join(dir, CAKey)); err == nil {
		return fmt.Errorf("certs: %s already holds a CA (%s); remove it first to make a new one — every node certificate must then be issued again", dir, CAKey)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: create %s: %w", dir, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certs: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Quire"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(ValidityCA),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("certs: sign CA: %w", err)
	}
	if err := writeKey(filepath.Join(dir, CAKey), key); err != nil {
		return err
	}
	return writeCert(filepath.Join(dir, CACert), der)
}

// Issue signs a certificate for name in role, valid for the given host
// names and IP addresses, with the CA in caDir, and writes name.crt and
// name.key into outDir (which may be caDir). The certificate carries the
// role and the name in its URI SAN (IdentityURI). Managers and agents serve
// as well as dial, so their certificates need at least one host; an
// operator's is a client certificate only and needs none.
func Issue(caDir, outDir, name string, role Role, hosts []string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("certs: node name %q is not allowed (lower-case letters, digits, '.', '_', '-'; at most 63)", name)
	}
	if _, err := ParseRole(string(role)); err != nil {
		return err
	}
	if len(hosts) == 0 && role != RoleOperator {
		return fmt.Errorf("certs: %s %s: give at least one host name or IP address it is reached at", role, name)
	}
	caCert, caKey, err := loadCA(caDir)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certs: generate key for %s: %w", name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"Quire"}, OrganizationalUnit: []string{string(role)}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ValidityNode),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{IdentityURI(role, name)},
	}
	if role == RoleOperator {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.DNSNames = []string{name}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" && h != name {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("certs: sign certificate for %s: %w", name, err)
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return fmt.Errorf("certs: create %s: %w", outDir, err)
	}
	if err := writeKey(KeyFile(outDir, name), key); err != nil {
		return err
	}
	return writeCert(CertFile(outDir, name), der)
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: serial number: %w", err)
	}
	return s, nil
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACert))
	if err != nil {
		return nil, nil, fmt.Errorf("certs: read CA certificate: %w (run `quire certs init --dir %s` first)", err, dir)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKey))
	if err != nil {
		return nil, nil, fmt.Errorf("certs: read CA key: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("certs: %s is not a PEM certificate", filepath.Join(dir, CACert))
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: parse %s: %w", filepath.Join(dir, CACert), err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, fmt.Errorf("certs: %s is not a PEM key", filepath.Join(dir, CAKey))
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: parse %s: %w", filepath.Join(dir, CAKey), err)
	}
	return cert, key, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("certs: encode key: %w", err)
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

func writeCert(path string, der []byte) error {
	return writePEM(path, "CERTIFICATE", der, 0o644)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	if err := statefile.Write(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}

// Files names the PEM files of one node's TLS identity.
type Files struct {
	CA, Cert, Key string
}

// ServerConfig returns a TLS config that serves the node's certificate and
// requires clients to present a certificate signed by the CA (mutual TLS).
func ServerConfig(f Files) (*tls.Config, error) {
	pool, cert, err := load(f)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// ClientConfig returns a TLS config that presents the node's certificate
// and verifies servers against the CA. serverName may be empty, in which
// case the dialled host is verified.
func ClientConfig(f Files, serverName string) (*tls.Config, error) {
	pool, cert, err := load(f)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
	}, nil
}

func load(f Files) (*x509.CertPool, tls.Certificate, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, tls.Certificate{}, errors.New("certs: TLS needs ca_file, cert_file and key_file")
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("certs: read CA %s: %w", f.CA, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, tls.Certificate{}, fmt.Errorf("certs: %s holds no PEM certificate", f.CA)
	}
	if fi, err := os.Stat(f.Key); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, tls.Certificate{}, fmt.Errorf("certs: %s has mode %04o, so group or other may read the private key; run chmod 600 %s", f.Key, fi.Mode().Perm(), f.Key)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("certs: load key pair %s / %s: %w", f.Cert, f.Key, err)
	}
	return pool, cert, nil
}
