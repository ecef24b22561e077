package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// cliConfig is the CLI's own configuration file: where the managers are
// and which TLS files to present, so that `quire status` needs no flags.
//
//	managers: [127.0.0.1:7311, 127.0.0.1:7312, 127.0.0.1:7313]
//	tls: {ca: /etc/quire/ca.crt, cert: /etc/quire/operator.crt, key: /etc/quire/operator.key}
//
// Flags win over the environment (QUIRE_MANAGERS, QUIRE_TLS_*), which wins
// over the file.
type cliConfig struct {
	Managers []string `yaml:"managers"`
	TLS      struct {
		CA   string `yaml:"ca"`
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
	Insecure bool `yaml:"insecure"`
}

// defaultCLIConfig is the per-user file read when neither --config nor
// QUIRE_CONFIG names one: $XDG_CONFIG_HOME/quire/cli.yaml, or
// ~/.config/quire/cli.yaml.
func defaultCLIConfig() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "quire", "cli.yaml")
}

// loadCLIConfig reads path. A missing file is an error only when it was
// named explicitly (required); the per-user default may be absent.
func loadCLIConfig(path string, required bool) (*cliConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if !required && errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("CLI configuration %s: %w", path, err)
	}
	return parseCLIConfig(b, path)
}

// parseCLIConfig parses the file's bytes; unknown keys are errors that
// name the key, and relative TLS paths are taken from the file's directory.
func parseCLIConfig(b []byte, path string) (*cliConfig, error) {
	var c cliConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("CLI configuration %s: %w", path, err)
	}
	for i, m := range c.Managers {
		m = strings.TrimSpace(m)
		if m == "" || !strings.Contains(m, ":") {
			return nil, fmt.Errorf("CLI configuration %s: managers[%d] = %q: want host:port", path, i, m)
		}
		c.Managers[i] = m
	}
	if c.Insecure && (c.TLS.CA != "" || c.TLS.Cert != "" || c.TLS.Key != "") {
		return nil, fmt.Errorf("CLI configuration %s: insecure: true together with tls files; choose one", path)
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&c.TLS.CA, &c.TLS.Cert, &c.TLS.Key} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return &c, nil
}

// applyConfig fills what neither a flag nor the environment gave from the
// CLI configuration: --config, else QUIRE_CONFIG, else the per-user file.
func (f *clusterFlags) applyConfig() error {
	path, required := f.config, f.config != ""
	if path == "" {
		path, required = os.Getenv("QUIRE_CONFIG"), os.Getenv("QUIRE_CONFIG") != ""
	}
	if path == "" {
		path = defaultCLIConfig()
	}
	if path == "" {
		return nil
	}
	c, err := loadCLIConfig(path, required)
	if err != nil || c == nil {
		return err
	}
	if f.managers == "" {
		f.managers = strings.Join(c.Managers, ",")
	}
	if f.insecure || f.ca != "" || f.cert != "" || f.key != "" {
		return nil // TLS chosen by flags or environment
	}
	f.insecure = c.Insecure
	f.ca, f.cert, f.key = c.TLS.CA, c.TLS.Cert, c.TLS.Key
	return nil
}
