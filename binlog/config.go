package binlog

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultHeartbeatPeriod = time.Second
	DefaultConnectTimeout  = 10 * time.Second
	DefaultReconnectMin    = 100 * time.Millisecond
	DefaultReconnectMax    = 5 * time.Second
	DefaultMaxTxSize       = 1 << 30 // 1 GiB
)

// maxHeartbeatPeriod is the largest period MariaDB accepts (slave_net_timeout's
// bound for MASTER_HEARTBEAT_PERIOD).
const maxHeartbeatPeriod = 4294967 * time.Second

// Config configures a Dumper and a Source. The zero value of every field
// but Addr, User, ServerID and (for a Source) Epoch has a sensible default.
type Config struct {
	// Addr is the source mariadbd: "host:port", or the path of its unix socket.
	Addr string
	// User and Password log in. The user needs REPLICATION SLAVE and
	// BINLOG MONITOR (SHOW MASTER STATUS) privileges.
	User, Password string
	// TLS, if not nil, encrypts the connection.
	TLS *tls.Config
	// Dial, if not nil, opens the network connection instead of net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// ServerID is the server_id the reader registers with. It must differ
	// from the source's and from every other replica's: mariadbd ends an
	// older dump that registered with the same id.
	ServerID uint32
	// ReportHost is the host name the reader registers with (SHOW SLAVE
	// HOSTS). Empty means os.Hostname.
	ReportHost string
	// SemiSync registers the reader as a semi-sync replica: mariadbd then
	// holds commits until Ack is called for their position. The source
	// must have rpl_semi_sync_master_enabled=ON.
	SemiSync bool

	// HeartbeatPeriod is how often the source sends a heartbeat event when
	// it has nothing else to send. Zero means DefaultHeartbeatPeriod.
	HeartbeatPeriod time.Duration
	// DeadAfter is how long the link may stay silent (no packet at all)
	// before the reader declares it dead and reconnects. Zero means two
	// heartbeat periods.
	DeadAfter time.Duration
	// ConnectTimeout bounds dialling, login and dump set-up, and the wait
	// for the first event of a dump. Zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// reconnection attempts; each wait is jittered. Zero means
	// DefaultReconnectMin and DefaultReconnectMax.
	ReconnectMin, ReconnectMax time.Duration
	// MaxTxSize bounds the bytes of one transaction's events, which a
	// Source holds in memory until the transaction is complete. Zero means
	// DefaultMaxTxSize.
	MaxTxSize int64

	// Epoch is the primary term the records are written in. A Source
	// requires it (at least 1).
	Epoch uint64

	// Logger receives the reader's logs; nil discards them.
	Logger *slog.Logger
	// Metrics, if not nil, counts what the reader does (see NewMetrics).
	Metrics *Metrics
}

// withDefaults fills zero fields and checks the connection settings.
func (c Config) withDefaults() (Config, error) {
	if c.HeartbeatPeriod == 0 {
		c.HeartbeatPeriod = DefaultHeartbeatPeriod
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = 2 * c.HeartbeatPeriod
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = max(DefaultReconnectMax, c.ReconnectMin)
	}
	if c.MaxTxSize == 0 {
		c.MaxTxSize = DefaultMaxTxSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.Addr == "":
		return c, fmt.Errorf("%w: Addr (the source mariadbd) is empty", ErrConfig)
	case c.User == "":
		return c, fmt.Errorf("%w: User is empty", ErrConfig)
	case c.ServerID == 0:
		return c, fmt.Errorf("%w: ServerID is 0; the reader needs a server_id of its own", ErrConfig)
	case len(c.ReportHost) > 255:
		return c, fmt.Errorf("%w: ReportHost is longer than 255 bytes", ErrConfig)
	case c.HeartbeatPeriod < time.Millisecond || c.HeartbeatPeriod > maxHeartbeatPeriod:
		return c, fmt.Errorf("%w: HeartbeatPeriod %s is outside 1ms..%s", ErrConfig, c.HeartbeatPeriod, maxHeartbeatPeriod)
	case c.DeadAfter < c.HeartbeatPeriod:
		return c, fmt.Errorf("%w: DeadAfter %s is shorter than HeartbeatPeriod %s", ErrConfig, c.DeadAfter, c.HeartbeatPeriod)
	case c.ConnectTimeout < 0:
		return c, fmt.Errorf("%w: ConnectTimeout %s is negative", ErrConfig, c.ConnectTimeout)
	case c.ReconnectMin < 0 || c.ReconnectMax < c.ReconnectMin:
		return c, fmt.Errorf("%w: ReconnectMin %s and ReconnectMax %s must satisfy 0 <= min <= max", ErrConfig, c.ReconnectMin, c.ReconnectMax)
	case c.MaxTxSize < 0:
		return c, fmt.Errorf("%w: MaxTxSize %d is negative", ErrConfig, c.MaxTxSize)
	}
	return c, nil
}
