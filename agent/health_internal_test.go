package agent

import (
	"strings"
	"testing"
)

func TestPrimaryReady(t *testing.T) {
	primary := Status{Node: "db1", Role: Role{Kind: RolePrimary, Epoch: 3}, Writable: true}
	withErr := primary
	withErr.RoleError = "extract: connection refused"
	readOnly := primary
	readOnly.Writable = false
	replica := Status{Node: "db1", Role: Role{Kind: RoleReplica, Epoch: 3}}
	for _, tc := range []struct {
		name                string
		st                  Status
		lease, mgd, asgKnow bool
		asgEpoch            uint64
		asgPrimary          string
		want                string // "" = ready
	}{
		{"managed, current", primary, true, true, true, 3, "db1", ""},
		{"static primary", primary, false, false, false, 0, "", ""},
		{"replica", replica, true, true, true, 3, "db1", "not the primary"},
		{"role failing", withErr, true, true, true, 3, "db1", "failing"},
		{"read-only database", readOnly, true, true, true, 3, "db1", "not writable"},
		{"no assignment yet", primary, true, true, false, 0, "", "no assignment"},
		{"newer term elsewhere", primary, true, true, true, 4, "db2", "name db2 primary of epoch 4"},
		{"same node, newer epoch", primary, true, true, true, 4, "db1", "epoch 4"},
		{"lease lost", primary, false, true, true, 3, "db1", "lease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := primaryReady(tc.st, tc.lease, tc.mgd, tc.asgKnow, tc.asgEpoch, tc.asgPrimary)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want ready, got %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
