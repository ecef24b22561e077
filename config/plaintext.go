package config

import (
	"fmt"
	"net"
	"strings"
)

// keyAddr is one address of a configuration and the key it is at.
type keyAddr struct {
	key, addr string
}

// isLoopback reports whether host:port names this host only: a loopback IP
// address (127.0.0.0/8, ::1) or "localhost". An empty host or a wildcard
// listens on every interface; any other name may resolve elsewhere.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckPlaintext refuses tls.insecure_plaintext unless every address the
// agent listens on or dials is on loopback; the error names the key.
// The agent calls it at start-up.
func (a *Agent) CheckPlaintext() error {
	out := []keyAddr{{"listen", a.Listen}, {"http_listen", a.HTTPListen}}
	for i, m := range a.Managers {
		out = append(out, keyAddr{indexPath("managers", i), m})
	}
	return checkPlaintext(a.TLS, append(out, keyAddr{"static.primary_agent", a.Static.PrimaryAgent}))
}

// CheckPlaintext is Agent.CheckPlaintext for a manager.
func (m *Manager) CheckPlaintext() error {
	out := []keyAddr{{"raft_listen", m.RaftListen}, {"grpc_listen", m.GRPCListen}, {"http_listen", m.HTTPListen}}
	for i, p := range m.Peers {
		out = append(out, keyAddr{join(indexPath("peers", i), "raft_addr"), p.RaftAddr}, keyAddr{join(indexPath("peers", i), "grpc_addr"), p.GRPCAddr})
	}
	return checkPlaintext(m.TLS, out)
}

// checkPlaintext refuses insecure_plaintext unless every address is on
// loopback: without TLS nobody is authenticated, so the network must not
// reach the process. The error names the first key that is not.
func checkPlaintext(t TLS, addrs []keyAddr) error {
	if !t.InsecurePlaintext {
		return nil
	}
	for _, ka := range addrs {
		if ka.addr == "" || isLoopback(ka.addr) {
			continue
		}
		return fmt.Errorf("config: %s: %q is not a loopback address, and tls.insecure_plaintext is true: without TLS every listener and "+
			"every address dialled must be on loopback (127.0.0.1, ::1, localhost); use a loopback address for %s or turn TLS on "+
			"(tls.ca_file, tls.cert_file, tls.key_file)", ka.key, ka.addr, ka.key)
	}
	return nil
}
