// Package rpcopts holds the gRPC keepalive and reconnect settings every Quire server and
// client uses, so that a peer that vanished without closing its connection
// (a host lost, a partition, a process stopped with SIGSTOP) is noticed in
// seconds instead of when the kernel gives up on the TCP connection.
package rpcopts

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/keepalive"
)

// Keepalive timing: a connection idle this long is pinged, and closed when
// the ping is not answered within Timeout.
const (
	Time    = 5 * time.Second
	Timeout = 3 * time.Second
)

// Server returns the keepalive options of a gRPC server. Clients may ping
// as often as every two seconds, also without active streams.
func Server() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: Time, Timeout: Timeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 2 * time.Second, PermitWithoutStream: true}),
	}
}

// Dial returns the keepalive and reconnect options of a gRPC client. A
// peer that restarts (a primary agent after kill -9) is dialled again
// within a second, not after gRPC's default backoff of up to two minutes.
func Dial() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: Time, Timeout: Timeout, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
	}
}
