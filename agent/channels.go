package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/quire-ha/quire/apply"
)

// Changing a replica's channel count (DESIGN.md §4) is the business of
// its apply.Supervisor (SetChannels: drain with the rows' count, switch).
// The agent keeps the new count in the data directory (channelsFile),
// where it overrides apply.channels until the configuration says the
// same; control.go maps the supervisor's errors to gRPC status codes.

// channelsFile, in data_dir, holds the channel count SetChannels set.
const channelsFile = "apply-channels.json"

// MaxChannels is the most channels an applier may run.
const MaxChannels = apply.MaxChannels

// channelsSetting is the content of channelsFile.
type channelsSetting struct {
	// Channels is the count SetChannels set.
	Channels int `json:"channels"`
	// ConfigChannels is apply.channels of the configuration at the time: a
	// configuration changed since then wins over the setting.
	ConfigChannels int `json:"config_channels"`
	// DrainedSeqno is where every restart row was before the switch.
	DrainedSeqno uint64    `json:"drained_seqno"`
	SetAt        time.Time `json:"set_at"`
}

func (a *Agent) channelsPath() string { return filepath.Join(a.cfg.DataDir, channelsFile) }

// loadChannelsSetting reads path; it returns nil if the file does not
// exist.
func loadChannelsSetting(path string) (*channelsSetting, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: read %s: %w", path, err)
	}
	var s channelsSetting
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("agent: %s is damaged (%v): it holds the channel count `quire channels --set-count` set; remove it to use apply.channels from the configuration", path, err)
	}
	if s.Channels < 1 || s.Channels > MaxChannels {
		return nil, fmt.Errorf("agent: %s says %d channels, want 1..%d: remove it to use apply.channels from the configuration", path, s.Channels, MaxChannels)
	}
	return &s, nil
}

// removeChannelsSetting removes path, if it exists, durably.
func removeChannelsSetting(path string) error {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("agent: remove %s: %w", path, err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("agent: remove %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("agent: remove %s: %w", path, err)
	}
	return nil
}

// channelsChoice is the channel count an agent starts its applier with.
type channelsChoice struct {
	// Channels is the count to use.
	Channels int
	// Drop: the kept setting no longer applies; remove its file.
	Drop bool
	// Warn, if set, is logged as a warning and shown in /status.
	Warn string
	// Info, if set, is logged.
	Info string
}

// chooseChannels picks the applier's channel count from apply.channels
// (configured) and the setting SetChannels kept (nil if none). The setting
// wins while the configuration still says what it said when the count was
// set; once the configuration says the same count, or was changed since,
// the configuration wins and the setting is dropped.
func chooseChannels(configured int, s *channelsSetting) channelsChoice {
	switch {
	case s == nil:
		return channelsChoice{Channels: configured}
	case s.Channels == configured:
		return channelsChoice{Channels: configured, Drop: true,
			Info: fmt.Sprintf("apply.channels in the configuration is %d, the count `quire channels --set-count` set: %s is no longer needed", configured, channelsFile)}
	case s.ConfigChannels != configured:
		return channelsChoice{Channels: configured, Drop: true,
			Warn: fmt.Sprintf("apply.channels in the configuration was changed from %d to %d after `quire channels --set-count %d`: using %d channels from the configuration",
				s.ConfigChannels, configured, s.Channels, configured)}
	}
	return channelsChoice{Channels: s.Channels,
		Warn: fmt.Sprintf("apply.channels in the configuration is %d, but `quire channels --set-count` set %d channels (kept in data_dir/%s): using %d; set apply.channels: %d in the agent's configuration",
			configured, s.Channels, channelsFile, s.Channels, s.Channels)}
}

// startChannels returns the channel count the applier starts with and the
// warning to show in /status, and logs the choice.
func (a *Agent) startChannels(log *slog.Logger) (int, string, error) {
	configured := a.cfg.Apply.Channels
	s, err := loadChannelsSetting(a.channelsPath())
	if err != nil {
		return configured, "", err
	}
	c := chooseChannels(configured, s)
	if c.Warn != "" {
		log.Warn(c.Warn, "config_channels", configured, "channels", c.Channels)
	}
	if c.Info != "" {
		log.Info(c.Info, "channels", c.Channels)
	}
	if c.Drop {
		if err := removeChannelsSetting(a.channelsPath()); err != nil {
			log.Warn("could not remove the obsolete channel count setting", "err", err)
		}
		return c.Channels, "", nil
	}
	return c.Channels, c.Warn, nil
}

// ChannelsResult is the outcome of SetChannels.
type ChannelsResult struct {
	apply.ChannelsResult
	// ConfigNote, if set, asks the operator to update the configuration.
	ConfigNote string
}

// SetChannels changes the channel count of the replica's applier to n
// (apply.Supervisor.SetChannels): the running applier stops, every channel
// is drained to one seqno with the count the restart rows were written
// with, the count is kept in the data directory, and the applier restarts
// with n channels. When an error is returned
// the applier's channel count did not change, unless ctx ended while the
// new run was starting (the error says so).
func (a *Agent) SetChannels(ctx context.Context, n int) (ChannelsResult, error) {
	if n < 1 || n > MaxChannels {
		return ChannelsResult{}, fmt.Errorf("%w: count %d is out of range: want 1..%d", ErrInvalid, n, MaxChannels)
	}
	a.mu.Lock()
	role, ra := a.role, a.rep
	a.mu.Unlock()
	if role.Kind != RoleReplica || ra == nil {
		return ChannelsResult{}, fmt.Errorf("%w: this agent is not a replica (role %s): only a replica's applier has channels", ErrConflict, role.Kind)
	}
	if ra.sup == nil {
		return ChannelsResult{}, fmt.Errorf("%w: the applier's configuration is refused (%v): fix the configuration and restart the agent", ErrConflict, ra.newErr)
	}
	res, err := ra.sup.SetChannels(ctx, n)
	if errors.Is(err, apply.ErrNotRunning) {
		if rerr := a.roleError(); rerr != nil {
			return ChannelsResult{}, fmt.Errorf("%w: %v", err, rerr)
		}
		return ChannelsResult{}, err
	}
	if err != nil {
		return ChannelsResult{}, err
	}
	return ChannelsResult{ChannelsResult: res, ConfigNote: ra.note(n)}, nil
}

// KeepChannels implements apply.Host: it keeps n in the data directory,
// or removes the file when the configuration says n already.
func (ra *replicaApply) KeepChannels(n int, drained uint64) error {
	path := ra.a.channelsPath()
	note := ra.note(n)
	if note == "" {
		return removeChannelsSetting(path)
	}
	b, err := json.MarshalIndent(channelsSetting{Channels: n, ConfigChannels: ra.a.cfg.Apply.Channels, DrainedSeqno: drained, SetAt: time.Now().UTC()}, "", "  ")
	if err != nil {
		return fmt.Errorf("agent: %s: %w", path, err)
	}
	if err := writeState(path, append(b, '\n')); err != nil {
		return err
	}
	ra.log.Warn(note)
	return nil
}

// note is the configuration note for a count of n.
func (ra *replicaApply) note(n int) string {
	if configured := ra.a.cfg.Apply.Channels; n != configured {
		return fmt.Sprintf("apply.channels in the agent's configuration is %d: set apply.channels: %d there (until then data_dir/%s keeps %d)", configured, n, channelsFile, n)
	}
	return ""
}

// countNote is the status warning about a channel count that differs from
// apply.channels, or "".
func (ra *replicaApply) countNote() string {
	if n := ra.sup.Channels(); n != ra.startCount {
		return ra.note(n)
	}
	return ra.startNote
}

// controlAddr is the address operators reach this agent's gRPC service
// at: the bound address, with the host name for an unspecified host.
func (a *Agent) controlAddr() string {
	addr := a.GRPCAddr()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if h, err := os.Hostname(); err == nil && h != "" {
			return net.JoinHostPort(h, port)
		}
	}
	return addr
}
