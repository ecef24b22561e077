package config

import (
	"strings"
	"testing"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7400": true, "127.9.9.9:1": true, "[::1]:7400": true, "localhost:7400": true, "LOCALHOST:1": true,
		"0.0.0.0:7400": false, ":7400": false, "[::]:7400": false, "10.0.0.1:7400": false, "db1:7400": false,
		"localhost.example.com:1": false, "127.0.0.1": false, "": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestCheckPlaintext(t *testing.T) {
	agent := func(y string) *Agent {
		t.Helper()
		a, err := parseAgent([]byte("node_id: db1\ndata_dir: /d\nmysql: {password_env: QUIRE_PW}\ntls: {insecure_plaintext: true}\n"+y), "agent.yaml", testEnv)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	lo := "listen: 127.0.0.1:7400\nhttp_listen: 127.0.0.1:7480\n"
	for _, tc := range []struct {
		yaml, key string
	}{
		{lo, ""},
		{"", "listen"}, // the default listens on every interface
		{"listen: 127.0.0.1:7400\n", "http_listen"},
		{lo + "managers: [127.0.0.1:7301, \"10.0.0.2:7301\"]\n", "managers[1]"},
		{lo + "static: {role: replica, primary_agent: \"db1:7400\"}\n", "static.primary_agent"},
		{"listen: \"[::1]:7400\"\nhttp_listen: localhost:7480\nstatic: {role: replica, primary_agent: \"127.0.0.1:7400\"}\n", ""},
	} {
		err := agent(tc.yaml).CheckPlaintext()
		switch {
		case tc.key == "" && err != nil:
			t.Errorf("%q: %v", tc.yaml, err)
		case tc.key != "" && (err == nil || !strings.HasPrefix(err.Error(), "config: "+tc.key+": ") || !strings.Contains(err.Error(), "tls.insecure_plaintext")):
			t.Errorf("%q: %v, want an error naming %s", tc.yaml, err, tc.key)
		}
	}
	m, err := parseManager([]byte("node_id: m1\ndata_dir: /d\ntls: {insecure_plaintext: true}\nraft_listen: 127.0.0.1:7300\ngrpc_listen: 127.0.0.1:7301\nhttp_listen: 127.0.0.1:7380\n"+
		"peers: [{id: m1, raft_addr: \"127.0.0.1:7300\", grpc_addr: \"127.0.0.1:7301\"}]\n"), "manager.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CheckPlaintext(); err != nil {
		t.Errorf("manager on loopback: %v", err)
	}
	m.Peers[0].GRPCAddr = "m1.example:7301"
	if err := m.CheckPlaintext(); err == nil || !strings.HasPrefix(err.Error(), "config: peers[0].grpc_addr: ") {
		t.Errorf("manager peer off loopback: %v", err)
	}
	m.TLS.InsecurePlaintext = false
	if err := m.CheckPlaintext(); err != nil {
		t.Errorf("with TLS: %v", err)
	}
}
