package agent

import (
	"context"
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/api/agentpb"
)

func TestEpochAllowed(t *testing.T) {
	unmanaged := epochView{Role: 3, Log: 2}
	managed := epochView{Role: 3, Log: 3, Managed: true, Managers: 4}
	for _, tc := range []struct {
		name  string
		epoch uint64
		v     epochView
		fence bool
		want  string // "" allowed, "confirm" ask the managers, else part of the error
	}{
		{"no epoch", 0, unmanaged, false, ""},
		{"current", 3, unmanaged, false, ""},
		{"next", 4, unmanaged, false, ""},
		{"two ahead without managers", 5, unmanaged, false, "more than one beyond"},
		{"max uint64 without managers", math.MaxUint64, unmanaged, false, "more than one beyond"},
		{"older", 2, unmanaged, false, "older than this agent's epoch 3"},
		{"log newer than role", 3, epochView{Role: 1, Log: 4}, false, "older than this agent's epoch 4"},
		{"fence older is harmless", 1, unmanaged, true, ""},
		{"fence max uint64", math.MaxUint64, unmanaged, true, "more than one beyond"},
		{"managed: issued", 4, managed, false, ""},
		{"managed: current", 3, managed, false, ""},
		{"managed: not yet seen", 5, managed, false, "confirm"},
		{"managed: max uint64", math.MaxUint64, managed, false, "confirm"},
		{"managed: fence not yet seen", 9, managed, true, "confirm"},
		{"managed: older", 2, managed, false, "older"},
		{"managed, no answer yet", 1, epochView{Managed: true}, false, "confirm"},
	} {
		err := epochAllowed(tc.epoch, tc.v, tc.fence)
		got := ""
		if _, ok := err.(errUnconfirmed); ok {
			got = "confirm"
		} else if err != nil {
			got = err.Error()
		}
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: epochAllowed(%d, %+v) = %q, want %q", tc.name, tc.epoch, tc.v, got, tc.want)
		}
	}
}

func TestTruncateAllowed(t *testing.T) {
	for _, tc := range []struct {
		seqno, floor uint64
		ok           bool
	}{{10, 10, true}, {11, 10, true}, {9, 10, false}, {0, 1, false}, {0, 0, true}} {
		err := truncateAllowed(tc.seqno, tc.floor)
		if (err == nil) != tc.ok {
			t.Errorf("truncate after %d with floor %d: %v", tc.seqno, tc.floor, err)
		}
	}
}

// TestBoundsWithoutDatabase checks the verbs whose bounds need no state.
func TestBoundsWithoutDatabase(t *testing.T) {
	a := &Agent{}
	for _, tc := range []struct {
		req  any
		code codes.Code
	}{
		{&agentpb.DrainRequest{TimeoutMs: 3_600_000}, codes.OK},
		{&agentpb.DrainRequest{TimeoutMs: 3_600_001}, codes.InvalidArgument},
		{&agentpb.DrainRequest{TimeoutMs: math.MaxUint32}, codes.InvalidArgument},
		{&agentpb.SetChannelsRequest{Count: 4, TimeoutMs: math.MaxUint32}, codes.InvalidArgument},
		{&agentpb.SetChannelsRequest{Count: 4}, codes.OK},
		{&agentpb.SetSyncSetRequest{Members: make([]string, MaxSyncSet+1)}, codes.InvalidArgument},
		{&agentpb.StatusRequest{}, codes.OK},
	} {
		if got := status.Code(a.checkBounds(context.Background(), tc.req)); got != tc.code {
			t.Errorf("%T %v: %s, want %s", tc.req, tc.req, got, tc.code)
		}
	}
}
