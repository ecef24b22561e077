package config

import "testing"

// TestDocumentErrors covers files that are not a single mapping, for both
// kinds of configuration.
func TestDocumentErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       wantErr
	}{
		{"empty", "", wantErr{0, "", "the file is empty; it must hold a mapping of settings (node_id,"}},
		{"only comments", "# nothing here\n\n", wantErr{0, "", "the file is empty"}},
		{"empty document", "---\n", wantErr{0, "", "the file holds no settings"}},
		{"null document", "~\n", wantErr{0, "", "the file holds no settings"}},
		{"list document", "- node_id: db1\n", wantErr{1, "", "the document must be a mapping of settings (node_id,"}},
		{"scalar document", "node_id db1\n", wantErr{1, "", `the document must be a mapping of settings (node_id, ` /* ... */}},
		{"two documents", "node_id: db1\n---\nnode_id: db2\n", wantErr{2, "", "a second YAML document starts here; the file must hold exactly one"}},
		{"syntax error", "node_id: db1\nmanagers: [a\n", wantErr{2, "", "invalid YAML: did not find expected ',' or ']'"}},
		{"unclosed list on line 1 (reported where the file ends)", "node_id: [db1\n", wantErr{2, "", "invalid YAML: did not find expected ',' or ']'"}},
		{"syntax error in block mapping", "node_id: db1\ndata_dir: /d\n- x\n", wantErr{3, "", "invalid YAML: did not find expected key"}},
		{"bad indentation", "node_id: db1\nmysql:\n  host: h\n user: u\n", wantErr{4, "", "invalid YAML: did not find expected key"}},
		{"scanner error on line 1", "node_id: a: b\n", wantErr{1, "", "invalid YAML: mapping values are not allowed in this context"}},
		{"scanner error on line 3", "node_id: db1\ndata_dir: /d\nlog_level: a: b\n", wantErr{3, "", "invalid YAML: mapping values are not allowed in this context"}},
		{"syntax error in second document", "node_id: db1\n---\n[x\n", wantErr{3, "", "invalid YAML: did not find expected ',' or ']'"}},
		{"tab indentation", "node_id: db1\n\tdata_dir: /d\n", wantErr{2, "", "invalid YAML: found a tab character that violates indentation"}},
		{"invalid UTF-8", "node_id: \xff\n", wantErr{0, "", "invalid YAML: invalid "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseAgent([]byte(tc.yaml), "agent.yaml", testEnv)
			checkErrs(t, "agent.yaml", err, []wantErr{tc.want})
			if tc.want.frag == "the file is empty" || tc.want.frag == "the file holds no settings" {
				_, err := parseManager([]byte(tc.yaml), "manager.yaml", testEnv)
				checkErrs(t, "manager.yaml", err, []wantErr{tc.want})
			}
		})
	}
}

// TestAliases checks that YAML anchors and aliases work as values.
func TestAliases(t *testing.T) {
	const y = `node_id: m1
data_dir: /d
tls: {insecure_plaintext: true}
x-addr: &a "h1:7300"
peers:
  - {id: m1, raft_addr: *a, grpc_addr: "h1:7301"}
`
	_, err := parseManager([]byte(y), "manager.yaml", testEnv)
	checkErrs(t, "manager.yaml", err, []wantErr{{4, "x-addr", `unknown key "x-addr"`}})

	const y2 = `node_id: m1
data_dir: /d
tls: &t {insecure_plaintext: true}
peers:
  - &p {id: m1, raft_addr: "h1:7300", grpc_addr: "h1:7301"}
`
	m, err := parseManager([]byte(y2), "manager.yaml", testEnv)
	if err != nil || m.Peers[0].RaftAddr != "h1:7300" {
		t.Fatalf("aliases: %v %+v", err, m)
	}
}
