// Package authz decides who may call what between Quire's processes.
//
// Every certificate carries a role (operator, manager, agent) and a name
// (certs.Identity). Every gRPC method has an explicit rule in [Cluster]:
// the roles allowed to call it, and for the methods where a node speaks
// for itself (registration, heartbeat, the log stream's hello) the node id
// the request claims must equal the certificate's name. A method without a
// rule is refused. [Authorizer] applies the rules as gRPC interceptors on
// the agents' and the managers' servers.
//
// The decisions are pure functions ([Policy.Check], [CheckNode]) tested
// without a network; the interceptors only read the caller's certificate
// and apply them.
package authz

import (
	"fmt"
	"slices"
	"strings"

	"github.com/quire-ha/quire/api/agentpb"
	"github.com/quire-ha/quire/api/managerpb"
	"github.com/quire-ha/quire/api/shippb"
	"github.com/quire-ha/quire/certs"
)

// Rule says who may call one gRPC method.
type Rule struct {
	// Roles may call the method; no other role may.
	Roles []certs.Role
	// Node, if set, returns the node id a received message claims to speak
	// for (ok false: the message claims none); it must equal the caller's
	// certificate name.
	Node func(msg any) (node string, ok bool)
	// OneStream: a node may hold only one live stream of this method; a
	// second one is refused while the first lives.
	OneStream bool
}

// Policy maps full gRPC method names ("/package.Service/Method") to their
// rules.
type Policy map[string]Rule

var (
	operator = certs.RoleOperator
	mgr      = certs.RoleManager
	agent    = certs.RoleAgent
)

// requestNode reads node_id of a registration or heartbeat.
func requestNode(msg any) (string, bool) {
	switch m := msg.(type) {
	case *managerpb.RegisterAgentRequest:
		return m.GetNodeId(), true
	case *managerpb.HeartbeatRequest:
		return m.GetNodeId(), true
	}
	return "", false
}

// helloNode reads node_id of a log stream's hello; acks claim no node.
func helloNode(msg any) (string, bool) {
	if up, ok := msg.(*shippb.Up); ok {
		if h := up.GetHello(); h != nil {
			return h.GetNodeId(), true
		}
	}
	return "", false
}

// Cluster is the rule of every gRPC method Quire serves.
//
//   - Agents call the managers only as themselves (register, heartbeat)
//     and stream the log from the primary agent as themselves.
//   - Operators change and read the cluster through the managers; on an
//     agent they may read its status and change its applier's channel
//     count (`quire channels`). Orders that change a node's role (fence,
//     promote, repoint, the ack gate) come only from the managers, which
//     record them in Raft first.
//   - Managers give agents their orders. Calls a follower forwards to the
//     leader are judged by the original caller's identity, which the
//     follower vouches for (see [Authorizer]).
var Cluster = Policy{
	agentpb.AgentControl_Status_FullMethodName:      {Roles: []certs.Role{mgr, operator}},
	agentpb.AgentControl_Fence_FullMethodName:       {Roles: []certs.Role{mgr}},
	agentpb.AgentControl_Drain_FullMethodName:       {Roles: []certs.Role{mgr}},
	agentpb.AgentControl_Promote_FullMethodName:     {Roles: []certs.Role{mgr}},
	agentpb.AgentControl_Repoint_FullMethodName:     {Roles: []certs.Role{mgr}},
	agentpb.AgentControl_SetSyncSet_FullMethodName:  {Roles: []certs.Role{mgr}},
	agentpb.AgentControl_SetChannels_FullMethodName: {Roles: []certs.Role{mgr, operator}},

	shippb.LogShipping_Stream_FullMethodName: {Roles: []certs.Role{agent}, Node: helloNode, OneStream: true},

	managerpb.ManagerService_RegisterAgent_FullMethodName:       {Roles: []certs.Role{agent}, Node: requestNode},
	managerpb.ManagerService_Heartbeat_FullMethodName:           {Roles: []certs.Role{agent}, Node: requestNode},
	managerpb.ManagerService_Status_FullMethodName:              {Roles: []certs.Role{operator}},
	managerpb.ManagerService_Members_FullMethodName:             {Roles: []certs.Role{operator}},
	managerpb.ManagerService_AddMember_FullMethodName:           {Roles: []certs.Role{operator}},
	managerpb.ManagerService_UpdateMember_FullMethodName:        {Roles: []certs.Role{operator}},
	managerpb.ManagerService_RemoveMember_FullMethodName:        {Roles: []certs.Role{operator}},
	managerpb.ManagerService_SetK_FullMethodName:                {Roles: []certs.Role{operator}},
	managerpb.ManagerService_SetPolicy_FullMethodName:           {Roles: []certs.Role{operator}},
	managerpb.ManagerService_SetSyncSet_FullMethodName:          {Roles: []certs.Role{operator}},
	managerpb.ManagerService_SetSettings_FullMethodName:         {Roles: []certs.Role{operator}},
	managerpb.ManagerService_InitCluster_FullMethodName:         {Roles: []certs.Role{operator}},
	managerpb.ManagerService_AcknowledgeFailover_FullMethodName: {Roles: []certs.Role{operator}},
	managerpb.ManagerService_RevokeCertificate_FullMethodName:   {Roles: []certs.Role{operator}},
	managerpb.ManagerService_ListRevoked_FullMethodName:         {Roles: []certs.Role{agent, operator}},
	managerpb.ManagerService_History_FullMethodName:             {Roles: []certs.Role{operator}},
}

// Check decides whether the holder of id may call method: nil, or an error
// that names the method, the caller and the roles allowed.
func (p Policy) Check(method string, id certs.Identity) error {
	rule, ok := p[method]
	if !ok {
		return fmt.Errorf("authz: %s has no authorization rule, so nobody may call it (add it to authz.Cluster)", method)
	}
	if slices.Contains(rule.Roles, id.Role) {
		return nil
	}
	allowed := "nobody"
	if len(rule.Roles) > 0 {
		s := make([]string, len(rule.Roles))
		for i, r := range rule.Roles {
			s[i] = string(r)
		}
		allowed = "role " + strings.Join(s, ", ")
	}
	return fmt.Errorf("authz: %s may not call %s (only %s may)", describe(id), method, allowed)
}

// CheckNode decides whether the holder of id may speak for node: only a
// node's own agent certificate may.
func CheckNode(id certs.Identity, node string) error {
	if node == id.Name {
		return nil
	}
	return fmt.Errorf("authz: %s may not speak for node %q: the node id of a registration, heartbeat or log stream must equal "+
		"the certificate's name (issue each agent its own certificate with `quire certs issue --role agent --name NODE_ID`)", describe(id), node)
}

func describe(id certs.Identity) string {
	return fmt.Sprintf("%s %q (certificate serial %s)", id.Role, id.Name, certs.SerialString(id.Serial))
}
