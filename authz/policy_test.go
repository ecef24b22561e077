package authz

import (
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/quire-ha/quire/api/agentpb"
	"github.com/quire-ha/quire/api/managerpb"
	"github.com/quire-ha/quire/api/shippb"
	"github.com/quire-ha/quire/certs"
)

// allServices are the service descriptions of every gRPC service Quire
// defines: the test below fails when one gains a method without a rule.
var allServices = []grpc.ServiceDesc{agentpb.AgentControl_ServiceDesc, shippb.LogShipping_ServiceDesc, managerpb.ManagerService_ServiceDesc}

func serviceInfo(descs ...grpc.ServiceDesc) map[string]grpc.ServiceInfo {
	out := map[string]grpc.ServiceInfo{}
	for _, d := range descs {
		si := grpc.ServiceInfo{}
		for _, m := range d.Methods {
			si.Methods = append(si.Methods, grpc.MethodInfo{Name: m.MethodName})
		}
		for _, s := range d.Streams {
			si.Methods = append(si.Methods, grpc.MethodInfo{Name: s.StreamName, IsClientStream: s.ClientStreams, IsServerStream: s.ServerStreams})
		}
		out[d.ServiceName] = si
	}
	return out
}

// want is the authorization matrix written out a second time, so that a
// change to Cluster must be made here too, deliberately: method → roles
// allowed ("o" operator, "m" manager, "a" agent).
var want = map[string]string{
	"/quire.agent.v1.AgentControl/Status":                  "om",
	"/quire.agent.v1.AgentControl/Fence":                   "m",
	"/quire.agent.v1.AgentControl/Drain":                   "m",
	"/quire.agent.v1.AgentControl/Promote":                 "m",
	"/quire.agent.v1.AgentControl/Repoint":                 "m",
	"/quire.agent.v1.AgentControl/SetSyncSet":              "m",
	"/quire.agent.v1.AgentControl/SetChannels":             "om",
	"/quire.ship.v1.LogShipping/Stream":                    "a",
	"/quire.manager.v1.ManagerService/RegisterAgent":       "a",
	"/quire.manager.v1.ManagerService/Heartbeat":           "a",
	"/quire.manager.v1.ManagerService/Status":              "o",
	"/quire.manager.v1.ManagerService/Members":             "o",
	"/quire.manager.v1.ManagerService/AddMember":           "o",
	"/quire.manager.v1.ManagerService/UpdateMember":        "o",
	"/quire.manager.v1.ManagerService/RemoveMember":        "o",
	"/quire.manager.v1.ManagerService/SetK":                "o",
	"/quire.manager.v1.ManagerService/SetPolicy":           "o",
	"/quire.manager.v1.ManagerService/SetSyncSet":          "o",
	"/quire.manager.v1.ManagerService/SetSettings":         "o",
	"/quire.manager.v1.ManagerService/InitCluster":         "o",
	"/quire.manager.v1.ManagerService/AcknowledgeFailover": "o",
	"/quire.manager.v1.ManagerService/RevokeCertificate":   "o",
	"/quire.manager.v1.ManagerService/ListRevoked":         "oa",
	"/quire.manager.v1.ManagerService/History":             "o",
}

func letter(r certs.Role) string { return string(r)[:1] }

func TestEveryMethodHasARule(t *testing.T) {
	if err := Cluster.Covers(serviceInfo(allServices...)); err != nil {
		t.Fatal(err)
	}
	for _, d := range allServices {
		for _, m := range d.Methods {
			if _, ok := want[("/" + d.ServiceName + "/" + m.MethodName)]; !ok {
				t.Errorf("%s/%s: add it to this test's matrix", d.ServiceName, m.MethodName)
			}
		}
		for _, s := range d.Streams {
			if _, ok := want[("/" + d.ServiceName + "/" + s.StreamName)]; !ok {
				t.Errorf("%s/%s: add it to this test's matrix", d.ServiceName, s.StreamName)
			}
		}
	}
	if len(Cluster) != len(want) {
		t.Errorf("Cluster has %d rules, the matrix %d", len(Cluster), len(want))
	}
	// A method without a rule is reported, and refused to every role.
	extra := serviceInfo(grpc.ServiceDesc{ServiceName: "quire.x.v1.New", Methods: []grpc.MethodDesc{{MethodName: "Do"}}})
	if err := Cluster.Covers(extra); err == nil || !strings.Contains(err.Error(), "/quire.x.v1.New/Do") {
		t.Errorf("Covers(new method) = %v", err)
	}
	for _, r := range certs.Roles {
		if err := Cluster.Check("/quire.x.v1.New/Do", certs.Identity{Role: r, Name: "x"}); err == nil || !strings.Contains(err.Error(), "no authorization rule") {
			t.Errorf("%s calling a method without a rule: %v", r, err)
		}
	}
}

func TestCheckMatrix(t *testing.T) {
	for method, allowed := range want {
		for _, r := range certs.Roles {
			id := certs.Identity{Role: r, Name: "n1"}
			err := Cluster.Check(method, id)
			if should := strings.Contains(allowed, letter(r)); should != (err == nil) {
				t.Errorf("%s by %s: allowed=%v, err=%v", method, r, should, err)
			}
			if err != nil && !strings.Contains(err.Error(), method) {
				t.Errorf("refusal does not name the method: %v", err)
			}
		}
		// A role Quire does not know (an empty one) is never allowed.
		if err := Cluster.Check(method, certs.Identity{Name: "x"}); err == nil {
			t.Errorf("%s by an empty role allowed", method)
		}
	}
}

func TestCheckNode(t *testing.T) {
	db1 := certs.Identity{Role: certs.RoleAgent, Name: "db1"}
	for _, tc := range []struct {
		node string
		ok   bool
	}{{"db1", true}, {"db2", false}, {"", false}, {"DB1", false}, {"db1 ", false}} {
		err := CheckNode(db1, tc.node)
		if (err == nil) != tc.ok {
			t.Errorf("db1 speaking for %q: %v", tc.node, err)
		}
		if err != nil && !strings.Contains(err.Error(), "--role agent --name NODE_ID") {
			t.Errorf("refusal says no fix: %v", err)
		}
	}
}

func TestNodeExtractors(t *testing.T) {
	for _, tc := range []struct {
		method string
		msg    any
		node   string
		ok     bool
	}{
		{managerpb.ManagerService_RegisterAgent_FullMethodName, &managerpb.RegisterAgentRequest{NodeId: "db1"}, "db1", true},
		{managerpb.ManagerService_Heartbeat_FullMethodName, &managerpb.HeartbeatRequest{NodeId: "db2"}, "db2", true},
		{shippb.LogShipping_Stream_FullMethodName, &shippb.Up{Msg: &shippb.Up_Hello{Hello: &shippb.Hello{NodeId: "db3"}}}, "db3", true},
		{shippb.LogShipping_Stream_FullMethodName, &shippb.Up{Msg: &shippb.Up_Ack{Ack: &shippb.Ack{DurableSeqno: 3}}}, "", false},
		{managerpb.ManagerService_Heartbeat_FullMethodName, &managerpb.StatusRequest{}, "", false},
	} {
		node, ok := Cluster[tc.method].Node(tc.msg)
		if node != tc.node || ok != tc.ok {
			t.Errorf("%s %T: (%q, %v), want (%q, %v)", tc.method, tc.msg, node, ok, tc.node, tc.ok)
		}
	}
}

func TestCheckForward(t *testing.T) {
	m1 := certs.Identity{Role: certs.RoleManager, Name: "m1"}
	peers := []string{"m1", "m2", "m3"}
	for _, tc := range []struct {
		name      string
		id        certs.Identity
		by, for_  []string
		want      string // caller "role/name via", or part of the error
		forwarder []string
	}{
		{"ok", m1, []string{"m1"}, []string{"agent/db1"}, "agent/db1 via m1", peers},
		{"operator", m1, []string{"m1"}, []string{"operator/alice"}, "operator/alice via m1", peers},
		{"agent forwards", certs.Identity{Role: certs.RoleAgent, Name: "m1"}, []string{"m1"}, []string{"operator/x"}, "only the managers named", peers},
		{"manager not in peers", certs.Identity{Role: certs.RoleManager, Name: "m9"}, []string{"m9"}, []string{"operator/x"}, "only the managers named", peers},
		{"names another forwarder", m1, []string{"m2"}, []string{"operator/x"}, "naming [m2]", peers},
		{"old manager", m1, []string{"m1"}, nil, "upgrade it", peers},
		{"two callers", m1, []string{"m1"}, []string{"operator/x", "agent/y"}, "upgrade it", peers},
		{"bad role", m1, []string{"m1"}, []string{"root/x"}, "not role/name", peers},
		{"no name", m1, []string{"m1"}, []string{"agent/"}, "not role/name", peers},
		{"agent sets forwarded-for", certs.Identity{Role: certs.RoleAgent, Name: "db1"}, nil, []string{"operator/x"}, "only the managers named", peers},
	} {
		c, err := checkForward(tc.id, tc.forwarder, tc.by, tc.for_)
		got := c.Identity.String() + " via " + c.Via
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
