package agent

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/manager"
)

func TestBackoff(t *testing.T) {
	var b backoff
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("delay %d = %s, want %s", i, got, w*time.Millisecond)
		}
	}
	b.Reset()
	if got := b.Next(); got != backoffMin {
		t.Fatalf("after Reset: %s, want %s", got, backoffMin)
	}
}

// TestBackoffBounds: whatever the sequence of calls, every delay lies in
// [backoffMin, backoffMax] and never decreases without a Reset.
func TestBackoffBounds(t *testing.T) {
	var b backoff
	prev := time.Duration(0)
	for i := range 1000 {
		if i%97 == 0 {
			b.Reset()
			prev = 0
		}
		d := b.Next()
		if d < backoffMin || d > backoffMax || d < prev {
			t.Fatalf("call %d: delay %s (previous %s) outside [%s, %s] or decreasing", i, d, prev, backoffMin, backoffMax)
		}
		prev = d
	}
}

func TestMarkerCurrent(t *testing.T) {
	marker := func(since uint64) *manager.Degraded { return &manager.Degraded{AsyncSince: since} }
	primary := func(epoch uint64, d *manager.Degraded) manager.Assignment {
		return manager.Assignment{Role: manager.RolePrimary, Epoch: epoch, Degraded: d}
	}
	for _, tc := range []struct {
		name              string
		asg               manager.Assignment
		seq, asked, epoch uint64
		since             uint64
		want              bool
	}{
		{"answer to the asking heartbeat", primary(3, marker(10)), 7, 7, 3, 10, true},
		{"answer to a later heartbeat", primary(3, marker(10)), 9, 7, 3, 12, true},
		{"answer to a heartbeat sent before the wish", primary(3, marker(10)), 6, 7, 3, 10, false},
		{"never asked", primary(3, marker(10)), 6, 0, 3, 10, false},
		{"no marker", primary(3, nil), 7, 7, 3, 10, false},
		{"marker of another epoch's assignment", primary(2, marker(10)), 7, 7, 3, 10, false},
		{"marker does not cover since", primary(3, marker(11)), 7, 7, 3, 10, false},
		{"not the primary any more", manager.Assignment{Role: manager.RoleReplica, Epoch: 3, Degraded: marker(1)}, 7, 7, 3, 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := markerCurrent(tc.asg, tc.seq, tc.asked, tc.epoch, tc.since); got != tc.want {
				t.Fatalf("markerCurrent = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.InvalidArgument, "heartbeat: last_epoch=1: is above the node's epoch 0"), true},
		{fmt.Errorf("wrapped: %w", &manager.Error{Code: codes.InvalidArgument, Message: "not a member"}), true},
		{status.Error(codes.PermissionDenied, "not yours"), true},
		{status.Error(codes.Unavailable, "no leader"), false},
		{status.Error(codes.DeadlineExceeded, "slow"), false},
		{errors.New("connection refused"), false},
	} {
		if got := refused(tc.err); got != tc.want {
			t.Errorf("refused(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestGRPCError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("%w: epoch must be at least 1", ErrInvalid), codes.InvalidArgument},
		{fmt.Errorf("%w: log of a newer epoch", ErrConflict), codes.FailedPrecondition},
		{fmt.Errorf("waiting: %w", errDeadline()), codes.DeadlineExceeded},
		{errors.New("database down"), codes.Unavailable},
		{status.Error(codes.OutOfRange, "kept"), codes.OutOfRange},
	} {
		if got := status.Code(grpcError("verb", tc.err)); got != tc.want {
			t.Errorf("grpcError(%v) code %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	st := Status{Role: Role{Kind: RolePrimary}, RoleError: "binlog: connection refused", FollowError: "promote: timed out"}
	if got, want := st.errorText(), "taking the assigned role: promote: timed out; primary role: binlog: connection refused"; got != want {
		t.Fatalf("errorText = %q, want %q", got, want)
	}
	if got := (Status{}).errorText(); got != "" {
		t.Fatalf("errorText of a healthy status = %q", got)
	}
}

func errDeadline() error {
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	return ctx.Err()
}
