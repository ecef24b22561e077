package server

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/quire-ha/quire/api/agentpb"
	"github.com/quire-ha/quire/internal/rpcopts"
)

// Agents is how the leader's failover driver talks to the members' agents
// (their AgentControl service). addr is the agent's gRPC address from its
// member record. Every call is bounded by ctx.
type Agents interface {
	Status(ctx context.Context, addr string) (*agentpb.AgentStatus, error)
	// Fence stops the agent's primary role and makes its database refuse
	// writes; epoch is the term that fences it.
	Fence(ctx context.Context, addr string, epoch uint64) (*agentpb.AgentStatus, error)
	// Promote makes the agent the primary of epoch once its log ends at
	// expectLast (0: wherever it ends); it returns when writes are open.
	Promote(ctx context.Context, addr string, epoch, expectLast uint64) (*agentpb.AgentStatus, error)
	// Repoint makes the agent a replica of the primary agent at primary in
	// epoch (its stream truncates at the fork point by itself).
	Repoint(ctx context.Context, addr string, epoch uint64, primary string) (*agentpb.AgentStatus, error)
	Close() error
}

// grpcAgents implements Agents over gRPC, one cached connection per agent.
type grpcAgents struct {
	creds credentials.TransportCredentials

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

func newGRPCAgents(creds credentials.TransportCredentials) *grpcAgents {
	return &grpcAgents{creds: creds, conns: map[string]*grpc.ClientConn{}}
}

func (g *grpcAgents) client(addr string) (agentpb.AgentControlClient, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errors.New("manager: agent client closed")
	}
	c, ok := g.conns[addr]
	if !ok {
		var err error
		c, err = grpc.NewClient(addr, append(rpcopts.Dial(), grpc.WithTransportCredentials(g.creds))...)
		if err != nil {
			return nil, fmt.Errorf("manager: dial agent %s: %w", addr, err)
		}
		g.conns[addr] = c
	}
	return agentpb.NewAgentControlClient(c), nil
}

func (g *grpcAgents) Status(ctx context.Context, addr string) (*agentpb.AgentStatus, error) {
	c, err := g.client(addr)
	if err != nil {
		return nil, err
	}
	return c.Status(ctx, &agentpb.StatusRequest{})
}

func (g *grpcAgents) Fence(ctx context.Context, addr string, epoch uint64) (*agentpb.AgentStatus, error) {
	c, err := g.client(addr)
	if err != nil {
		return nil, err
	}
	return c.Fence(ctx, &agentpb.FenceRequest{Epoch: epoch})
}

func (g *grpcAgents) Promote(ctx context.Context, addr string, epoch, expectLast uint64) (*agentpb.AgentStatus, error) {
	c, err := g.client(addr)
	if err != nil {
		return nil, err
	}
	return c.Promote(ctx, &agentpb.PromoteRequest{Epoch: epoch, ExpectLastSeqno: expectLast})
}

func (g *grpcAgents) Repoint(ctx context.Context, addr string, epoch uint64, primary string) (*agentpb.AgentStatus, error) {
	c, err := g.client(addr)
	if err != nil {
		return nil, err
	}
	return c.Repoint(ctx, &agentpb.RepointRequest{Epoch: epoch, PrimaryAgent: primary})
}

func (g *grpcAgents) Close() error {
	g.mu.Lock()
	conns := g.conns
	g.conns, g.closed = map[string]*grpc.ClientConn{}, true
	g.mu.Unlock()
	var errs []error
	for a, c := range conns {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("manager: close connection to agent %s: %w", a, err))
		}
	}
	return errors.Join(errs...)
}
