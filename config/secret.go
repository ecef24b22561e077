package config

import (
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
)

const redacted = "[redacted]"

// Secret holds a password. It prints, marshals and logs as "[redacted]"
// whatever the verb or encoder; only [Secret.Reveal] returns the value. The
// zero Secret holds no password.
type Secret struct {
	// p points to the value, so that even reflection-based printing of a
	// struct holding a Secret in an unexported field shows an address.
	p *string
}

// NewSecret returns a Secret holding s.
func NewSecret(s string) Secret { return Secret{p: &s} }

// Reveal returns the password. Call it only where the password is used.
func (s Secret) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// IsSet reports whether s holds a non-empty password.
func (s Secret) IsSet() bool { return s.p != nil && *s.p != "" }

// String returns "[redacted]".
func (Secret) String() string { return redacted }

// GoString returns "[redacted]", for %#v.
func (Secret) GoString() string { return redacted }

// Format writes "[redacted]" for every verb and flag.
func (Secret) Format(f fmt.State, _ rune) { io.WriteString(f, redacted) }

// MarshalJSON returns the JSON string "[redacted]".
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "[redacted]" (YAML, XML and other text encoders).
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue returns "[redacted]" for log/slog.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// environ is what loading reads besides the file itself: the environment and
// the files a configuration names. Tests substitute it.
type environ struct {
	lookupEnv func(string) (string, bool)
	stat      func(string) (fs.FileInfo, error)
	open      func(string) (io.ReadCloser, error)
}

var osEnviron = environ{
	lookupEnv: os.LookupEnv,
	stat:      os.Stat,
	open:      func(name string) (io.ReadCloser, error) { return os.Open(name) },
}

// maxPasswordFile bounds the size of a password file.
const maxPasswordFile = 4096

// loadPassword reads the password named by file (a path) or envName (an
// environment variable name); exactly one of them is non-empty. Messages
// never include the password.
func (d *decoder) loadPassword(env environ, path, file, envName string) (Secret, bool) {
	if file != "" {
		p := join(path, "password_file")
		line := d.line(p)
		fi, err := env.stat(file)
		switch {
		case os.IsNotExist(err):
			d.add(line, p, "%s does not exist", file)
			return Secret{}, false
		case err != nil:
			d.add(line, p, "cannot read %s: %v", file, unwrapPath(err))
			return Secret{}, false
		case !fi.Mode().IsRegular():
			d.add(line, p, "%s is not a regular file", file)
			return Secret{}, false
		case fi.Mode().Perm()&0o077 != 0:
			d.add(line, p, "%s has mode %04o, so group or other may read it; run chmod 600 %s", file, fi.Mode().Perm(), file)
			return Secret{}, false
		}
		f, err := env.open(file)
		if err != nil {
			d.add(line, p, "cannot read %s: %v", file, unwrapPath(err))
			return Secret{}, false
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxPasswordFile+1))
		switch {
		case err != nil:
			d.add(line, p, "cannot read %s: %v", file, unwrapPath(err))
			return Secret{}, false
		case len(b) > maxPasswordFile:
			d.add(line, p, "%s is larger than %d bytes; it must hold only the password", file, maxPasswordFile)
			return Secret{}, false
		}
		s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if s == "" {
			d.add(line, p, "%s is empty; it must hold the password", file)
			return Secret{}, false
		}
		if strings.ContainsAny(s, "\r\n") {
			d.add(line, p, "%s holds more than one line; it must hold only the password", file)
			return Secret{}, false
		}
		return NewSecret(s), true
	}
	p := join(path, "password_env")
	v, ok := env.lookupEnv(envName)
	switch {
	case !ok:
		d.add(d.line(p), p, "environment variable %s is not set", envName)
		return Secret{}, false
	case v == "":
		d.add(d.line(p), p, "environment variable %s is empty", envName)
		return Secret{}, false
	}
	return NewSecret(v), true
}

// unwrapPath drops the *fs.PathError wrapper whose path the message already names.
func unwrapPath(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return pe.Err
	}
	return err
}
