package config

import (
	"io"
	"io/fs"
	"strings"
	"time"
)

// fakeFile is a file of a fake filesystem.
type fakeFile struct {
	mode fs.FileMode
	data string
}

type fakeInfo struct {
	name string
	f    fakeFile
}

func (i fakeInfo) Name() string       { return i.name }
func (i fakeInfo) Size() int64        { return int64(len(i.f.data)) }
func (i fakeInfo) Mode() fs.FileMode  { return i.f.mode }
func (i fakeInfo) ModTime() time.Time { return time.Time{} }
func (i fakeInfo) IsDir() bool        { return i.f.mode.IsDir() }
func (i fakeInfo) Sys() any           { return nil }

// fakeEnviron returns an environ over files and vars instead of the real
// filesystem and environment.
func fakeEnviron(files map[string]fakeFile, vars map[string]string) environ {
	return environ{
		lookupEnv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		stat: func(name string) (fs.FileInfo, error) {
			f, ok := files[name]
			if !ok {
				return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
			}
			return fakeInfo{name, f}, nil
		},
		open: func(name string) (io.ReadCloser, error) {
			f, ok := files[name]
			if !ok {
				return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
			}
			return io.NopCloser(strings.NewReader(f.data)), nil
		},
	}
}

const (
	testPassword    = "pw-from-file-Xq7"
	testEnvPassword = "pw-from-env-Zk9"
)

// testEnv is the fake environment of the table tests: TLS files and password
// files under /etc/quire, and the variables QUIRE_PW and QUIRE_EMPTY.
var testEnv = fakeEnviron(map[string]fakeFile{
	"/etc/quire/ca.pem":              {0o644, "ca"},
	"/etc/quire/cert.pem":            {0o644, "cert"},
	"/etc/quire/key.pem":             {0o600, "key"},
	"/etc/quire/tls/ca.pem":          {0o644, "ca"},
	"/etc/quire/tls/db1.pem":         {0o644, "cert"},
	"/etc/quire/tls/db1-key.pem":     {0o600, "key"},
	"/etc/quire/tls/m1.pem":          {0o644, "cert"},
	"/etc/quire/tls/m1-key.pem":      {0o600, "key"},
	"/etc/quire/mysql.password":      {0o600, testPassword + "\n"},
	"/etc/quire/readonly.password":   {0o400, testPassword},
	"/etc/quire/open.password":       {0o644, testPassword + "\n"},
	"/etc/quire/group.password":      {0o640, testPassword + "\n"},
	"/etc/quire/empty.password":      {0o600, "\n"},
	"/etc/quire/twoline.password":    {0o600, "a\nb\n"},
	"/etc/quire/dir":                 {fs.ModeDir | 0o755, ""},
	"/etc/quire/relative/agent.yaml": {0o644, ""},
}, map[string]string{
	"QUIRE_PW":    testEnvPassword,
	"QUIRE_EMPTY": "",
})
