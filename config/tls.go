package config

import (
	"os"
	"path/filepath"
)

// TLS configures the mutual TLS of gRPC between Quire processes: either all
// three files, or InsecurePlaintext for tests.
type TLS struct {
	// CAFile is the PEM file of the CA that signs every Quire certificate.
	CAFile string `yaml:"ca_file"`
	// CertFile is this process's PEM certificate (server and client use).
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of CertFile.
	KeyFile string `yaml:"key_file"`
	// InsecurePlaintext turns TLS off. For tests on loopback only.
	InsecurePlaintext bool `yaml:"insecure_plaintext"`
}

// finish checks that the settings are complete and the files exist, and
// resolves relative paths against dir.
func (t *TLS) finish(d *decoder, env environ, dir, path string) {
	files := []struct {
		key string
		v   *string
	}{{"ca_file", &t.CAFile}, {"cert_file", &t.CertFile}, {"key_file", &t.KeyFile}}
	if d.bad[path] {
		return
	}
	for _, f := range files {
		if d.bad[join(path, f.key)] {
			return
		}
	}
	if t.InsecurePlaintext {
		for _, f := range files {
			if *f.v != "" {
				p := join(path, f.key)
				d.fail(d.line(p), p, "must not be set together with insecure_plaintext: true (remove one of them)")
			}
		}
		return
	}
	var missing []string
	for _, f := range files {
		if *f.v == "" {
			missing = append(missing, f.key)
		}
	}
	switch len(missing) {
	case 0:
	case len(files):
		d.fail(d.line(path), path, "set ca_file, cert_file and key_file for mutual TLS, or insecure_plaintext: true to run without TLS (tests only)")
		return
	default:
		for _, key := range missing {
			p := join(path, key)
			d.fail(d.line(p), p, "required key is missing: set ca_file, cert_file and key_file together, or insecure_plaintext: true")
		}
		return
	}
	for _, f := range files {
		p := join(path, f.key)
		*f.v = resolvePath(dir, *f.v)
		d.checkFile(env, p, *f.v)
	}
	// The private key is checked like a password file: owner only.
	p := join(path, "key_file")
	if fi, err := env.stat(t.KeyFile); err == nil && !d.bad[p] && fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
		d.fail(d.line(p), p, "%s has mode %04o, so group or other may read the private key; run chmod 600 %s", t.KeyFile, fi.Mode().Perm(), t.KeyFile)
	}
}

// checkFile records a problem at path unless name is an existing regular file.
func (d *decoder) checkFile(env environ, path, name string) {
	fi, err := env.stat(name)
	switch {
	case os.IsNotExist(err):
		d.fail(d.line(path), path, "%s does not exist", name)
	case err != nil:
		d.fail(d.line(path), path, "cannot read %s: %v", name, unwrapPath(err))
	case !fi.Mode().IsRegular():
		d.fail(d.line(path), path, "%s is not a regular file", name)
	}
}

// configDir returns the absolute directory of the configuration file name,
// against which relative paths in it are resolved.
func configDir(name string) string {
	dir := filepath.Dir(name)
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}

// resolvePath makes a relative path relative to dir, the directory of the
// configuration file.
func resolvePath(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}
