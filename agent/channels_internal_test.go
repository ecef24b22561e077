package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/apply"
)

func TestChooseChannels(t *testing.T) {
	for _, tc := range []struct {
		name       string
		configured int
		set        *channelsSetting
		want       int
		drop       bool
		warn       []string // substrings of the warning; none: no warning
	}{
		{"no setting", 4, nil, 4, false, nil},
		{"setting over an unchanged configuration", 4, &channelsSetting{Channels: 2, ConfigChannels: 4}, 2, false,
			[]string{"apply.channels in the configuration is 4", "set 2 channels", "set apply.channels: 2"}},
		{"configuration caught up", 2, &channelsSetting{Channels: 2, ConfigChannels: 4}, 2, true, nil},
		{"configuration changed since", 8, &channelsSetting{Channels: 2, ConfigChannels: 4}, 8, true,
			[]string{"changed from 4 to 8", "--set-count 2", "using 8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := chooseChannels(tc.configured, tc.set)
			if c.Channels != tc.want || c.Drop != tc.drop {
				t.Fatalf("chooseChannels(%d, %+v) = %+v, want %d channels, drop %v", tc.configured, tc.set, c, tc.want, tc.drop)
			}
			if (c.Warn != "") != (tc.warn != nil) {
				t.Fatalf("warning %q, want one: %v", c.Warn, tc.warn != nil)
			}
			for _, w := range tc.warn {
				if !strings.Contains(c.Warn, w) {
					t.Errorf("warning %q lacks %q", c.Warn, w)
				}
			}
		})
	}
}

func TestChannelsSettingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, channelsFile)
	if s, err := loadChannelsSetting(path); s != nil || err != nil {
		t.Fatalf("missing file: %+v, %v", s, err)
	}
	if err := writeState(path, []byte(`{"channels": 3, "config_channels": 8, "drained_seqno": 42}`)); err != nil {
		t.Fatal(err)
	}
	s, err := loadChannelsSetting(path)
	if err != nil || s == nil || s.Channels != 3 || s.ConfigChannels != 8 || s.DrainedSeqno != 42 {
		t.Fatalf("load: %+v, %v", s, err)
	}
	for _, bad := range []string{`{"channels": 0}`, `{"channels": 257}`, `{"chan`} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadChannelsSetting(path); err == nil || !strings.Contains(err.Error(), "remove it") {
			t.Errorf("%s: %v, want an error saying to remove the file", bad, err)
		}
	}
	if err := removeChannelsSetting(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("after remove: %v", err)
	}
	if err := removeChannelsSetting(path); err != nil {
		t.Fatalf("removing a missing file: %v", err)
	}
}

func TestGRPCErrorOfChannels(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("apply: 300 channels: %w", apply.ErrBadChannels), codes.InvalidArgument},
		{fmt.Errorf("apply: set channels: %w", apply.ErrNotRunning), codes.FailedPrecondition},
		{fmt.Errorf("apply: set channels: %w", apply.ErrChangeBusy), codes.FailedPrecondition},
		{fmt.Errorf("apply: rows: %w", apply.ErrShardMapChanged), codes.FailedPrecondition},
		{fmt.Errorf("apply: drain: %w", apply.ErrDrainFirst), codes.FailedPrecondition},
		{fmt.Errorf("apply: keep: %w", apply.ErrSwitch), codes.Internal},
		{fmt.Errorf("apply: drain: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("apply: no answer in time (%w)", context.Canceled), codes.Canceled},
		{errors.New("apply: read restart rows: connection refused"), codes.Unavailable},
	} {
		if got := status.Code(grpcError("set channels", tc.err)); got != tc.want {
			t.Errorf("grpcError(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
