package binlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
)

// Replication protocol constants.
const (
	comRegisterSlave = 0x15 // COM_REGISTER_SLAVE
	comBinlogDump    = 0x12 // COM_BINLOG_DUMP

	semiSyncMagic    = 0xef // replication.SemiSyncIndicator
	semiSyncNeedsAck = 0x01

	// mariaSlaveCapabilityGTID tells MariaDB the replica understands GTID
	// events (MARIA_SLAVE_CAPABILITY_GTID).
	mariaSlaveCapabilityGTID = 4
)

// Dumper is one binlog dump connection to a MariaDB source. ReadEvent must
// be called from one goroutine at a time; Ack and Close may be called from
// any goroutine, concurrently with ReadEvent.
type Dumper struct {
	cfg      Config
	conn     *client.Conn
	raw      *deadlineConn
	dec      *decoder
	semiSync bool
	sourceID uint32
	version  string
	first    bool // no packet read yet

	writeMu sync.Mutex // serializes writes on the connection (ACKs)
	closed  atomic.Bool
}

// Dial connects to the source, registers as a replica and starts a binlog
// dump at position from (an event boundary; the end of a transaction to
// start after it). With semi-sync, MariaDB treats from as acknowledged.
func Dial(ctx context.Context, cfg Config, from Position) (*Dumper, error) {
	if err := from.validate(); err != nil {
		return nil, fmt.Errorf("binlog: dial: %w", err)
	}
	return dial(ctx, cfg, from, "")
}

// DialGTID is Dial starting after a MariaDB GTID state such as "0-1-5":
// the first event group sent is the one after 0-1-5 in domain 0. The dump
// runs with @slave_gtid_strict_mode=1, so a state the source's binlog does
// not contain is an error rather than a silent gap.
func DialGTID(ctx context.Context, cfg Config, state string) (*Dumper, error) {
	if err := validateGTIDState(state); err != nil {
		return nil, fmt.Errorf("binlog: dial: %w", err)
	}
	return dial(ctx, cfg, Position{}, state)
}

func dial(ctx context.Context, cfg Config, from Position, gtidState string) (*Dumper, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("binlog: dial: %w", err)
	}
	start := from.String()
	if gtidState != "" {
		start = "GTID " + gtidState
	}
	wrap := func(err error) error {
		return fmt.Errorf("binlog: dump from %s at %s: %w", cfg.Addr, start, err)
	}

	var rawPtr atomic.Pointer[deadlineConn]
	stop := context.AfterFunc(ctx, func() {
		if c := rawPtr.Load(); c != nil {
			c.Close()
		}
	})
	defer stop()

	network := "tcp"
	if strings.Contains(cfg.Addr, "/") {
		network = "unix"
	}
	dialFn := cfg.Dial
	if dialFn == nil {
		nd := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 15 * time.Second}
		dialFn = nd.DialContext
	}
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialFn(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		dc := &deadlineConn{Conn: c}
		dc.setTimeouts(cfg.ConnectTimeout, cfg.ConnectTimeout)
		rawPtr.Store(dc)
		return dc, nil
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	conn, err := client.ConnectWithDialer(dctx, network, cfg.Addr, cfg.User, cfg.Password, "", dialer,
		func(c *client.Conn) error {
			c.SetTLSConfig(cfg.TLS)
			c.SetAttributes(map[string]string{"program_name": "quire-binlog"})
			return nil
		})
	if err != nil {
		if c := rawPtr.Load(); c != nil {
			c.Close()
		}
		if ctx.Err() != nil {
			return nil, wrap(ctx.Err())
		}
		return nil, wrap(classifyServerError(err))
	}
	d := &Dumper{cfg: cfg, conn: conn, raw: rawPtr.Load(), first: true}
	if err := d.setup(from, gtidState); err != nil {
		d.Close()
		if ctx.Err() != nil {
			return nil, wrap(ctx.Err())
		}
		return nil, wrap(err)
	}
	if cfg.Metrics != nil {
		cfg.Metrics.connected.Set(1)
	}
	cfg.Logger.Info("binlog dump started", "source", cfg.Addr, "from", start, "semi_sync", d.semiSync,
		"source_server_id", d.sourceID, "version", d.version)
	return d, nil
}

// setup checks the source's settings, registers and sends the dump command.
func (d *Dumper) setup(from Position, gtidState string) error {
	cfg := d.cfg
	r, err := d.conn.Execute("SELECT @@version, @@global.server_id, @@global.log_bin, @@global.binlog_checksum, " +
		"@@global.log_bin_compress, @@global.rpl_semi_sync_master_enabled")
	if err != nil {
		return fmt.Errorf("read source settings: %w", classifyServerError(err))
	}
	str := func(col int) string { s, _ := r.GetString(0, col); return s }
	d.version = str(0)
	id, _ := r.GetUint(0, 1)
	d.sourceID = uint32(id)
	logBin, _ := r.GetInt(0, 2)
	checksum := strings.ToUpper(str(3))
	compress, _ := r.GetInt(0, 4)
	semiEnabled, _ := r.GetInt(0, 5)
	switch {
	case !strings.Contains(d.version, "MariaDB"):
		return fmt.Errorf("%w: source version %q is not MariaDB; the reader speaks MariaDB's replication protocol", ErrConfig, d.version)
	case logBin != 1:
		return fmt.Errorf("%w: binary logging is off on the source (log_bin)", ErrConfig)
	case compress != 0:
		return fmt.Errorf("the source runs with log_bin_compress=ON: %w", ErrCompressed)
	case d.sourceID == cfg.ServerID:
		return fmt.Errorf("%w: ServerID %d is the source's own server_id", ErrConfig, cfg.ServerID)
	case checksum != "CRC32" && checksum != "NONE":
		return fmt.Errorf("%w: source binlog_checksum=%q, want CRC32 (or NONE)", ErrConfig, checksum)
	case cfg.SemiSync && semiEnabled != 1:
		return fmt.Errorf("%w: semi-sync requested but the source has rpl_semi_sync_master_enabled=OFF", ErrConfig)
	}
	if checksum == "NONE" {
		cfg.Logger.Warn("source binlog_checksum=NONE: events are not checksummed", "source", cfg.Addr)
	}

	// One SET for all session variables the dump thread reads.
	vars := []string{
		"@master_binlog_checksum='" + checksum + "'",
		"@mariadb_slave_capability=" + strconv.Itoa(mariaSlaveCapabilityGTID),
		"@master_heartbeat_period=" + strconv.FormatInt(cfg.HeartbeatPeriod.Nanoseconds(), 10),
	}
	if cfg.SemiSync {
		vars = append(vars, "@rpl_semi_sync_slave=1")
	}
	if gtidState != "" {
		vars = append(vars, "@slave_connect_state='"+gtidState+"'", "@slave_gtid_strict_mode=1")
	}
	if _, err := d.conn.Execute("SET " + strings.Join(vars, ", ")); err != nil {
		return fmt.Errorf("set dump session variables: %w", classifyServerError(err))
	}
	if err := d.register(); err != nil {
		return err
	}
	d.semiSync = cfg.SemiSync
	d.dec = newDecoder(checksum == "CRC32")

	// COM_BINLOG_DUMP: pos(4) flags(2) server_id(4) file name. No flags:
	// annotate-rows events are not requested (see docs/extraction.md).
	pkt := make([]byte, 4+1+4+2+4+len(from.File))
	pkt[4] = comBinlogDump
	binary.LittleEndian.PutUint32(pkt[5:], uint32(max(from.Pos, fdeOffset)))
	binary.LittleEndian.PutUint16(pkt[9:], 0)
	binary.LittleEndian.PutUint32(pkt[11:], cfg.ServerID)
	copy(pkt[15:], from.File)
	d.conn.ResetSequence()
	if err := d.conn.WritePacket(pkt); err != nil {
		return fmt.Errorf("send binlog dump command: %w", err)
	}
	// The source may need a while to find the start (a GTID state is
	// searched for in its binlog files) before the first packet.
	d.raw.setTimeouts(max(cfg.ConnectTimeout, cfg.DeadAfter), cfg.ConnectTimeout)
	return nil
}

// register sends COM_REGISTER_SLAVE.
func (d *Dumper) register() error {
	host := d.cfg.ReportHost
	if host == "" {
		host, _ = os.Hostname()
		if len(host) > 255 {
			host = host[:255]
		}
	}
	// server_id(4) host(1+n) user(1) password(1) port(2) rank(4) master_id(4)
	pkt := make([]byte, 4, 4+1+4+1+len(host)+1+1+2+4+4)
	pkt = append(pkt, comRegisterSlave)
	pkt = binary.LittleEndian.AppendUint32(pkt, d.cfg.ServerID)
	pkt = append(pkt, byte(len(host)))
	pkt = append(pkt, host...)
	pkt = append(pkt, 0, 0)       // no user, no password reported
	pkt = append(pkt, 0, 0)       // port
	pkt = append(pkt, 0, 0, 0, 0) // rank
	pkt = append(pkt, 0, 0, 0, 0) // master id
	d.conn.ResetSequence()
	if err := d.conn.WritePacket(pkt); err != nil {
		return fmt.Errorf("register as replica: %w", err)
	}
	if _, err := d.conn.ReadOKPacket(); err != nil {
		return fmt.Errorf("register as replica (server_id %d): %w", d.cfg.ServerID, classifyServerError(err))
	}
	return nil
}

// ReadEvent returns the next event of the dump, heartbeats included. It
// blocks until one arrives, the link has been silent for Config.DeadAfter,
// or the Dumper is closed.
func (d *Dumper) ReadEvent() (*Event, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	pkt, err := d.conn.ReadPacket()
	if err != nil {
		if d.closed.Load() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("binlog: read from %s: %w", d.cfg.Addr, err)
	}
	if d.first {
		d.first = false
		d.raw.setTimeouts(d.cfg.DeadAfter, d.cfg.ConnectTimeout)
	}
	if len(pkt) == 0 {
		return nil, fmt.Errorf("%w: empty packet from %s", ErrProtocol, d.cfg.Addr)
	}
	switch pkt[0] {
	case mysql.OK_HEADER:
	case mysql.ERR_HEADER:
		return nil, fmt.Errorf("binlog: %s ended the dump: %w", d.cfg.Addr, classifyServerError(d.conn.HandleErrorPacket(pkt)))
	default:
		return nil, fmt.Errorf("%w: packet starts with %#x, want an event (0x00)", ErrProtocol, pkt[0])
	}
	body := pkt[1:]
	needAck := false
	if d.semiSync {
		if len(body) < 2 || body[0] != semiSyncMagic {
			return nil, fmt.Errorf("%w: semi-sync dump packet without the %#x header", ErrProtocol, semiSyncMagic)
		}
		needAck = body[1] == semiSyncNeedsAck
		body = body[2:]
		if needAck {
			// After an event that asks for a reply the source restarts its
			// packet numbering (net_clear + pkt_nr++ in flush_net), because
			// replies interleave with its packets. Only this goroutine
			// reads Sequence; Ack writes raw packets and never touches it.
			d.conn.Sequence = 1
		}
	}
	ev, err := d.dec.decode(body)
	if err != nil {
		return nil, err
	}
	ev.NeedAck = needAck
	if m := d.cfg.Metrics; m != nil {
		m.bytes.Add(float64(len(ev.Raw)))
		if ev.Header.EventType != replication.HEARTBEAT_EVENT {
			m.events.Inc()
		}
		if ev.Header.Timestamp != 0 {
			m.lastEventTime.Set(float64(ev.Header.Timestamp))
		}
	}
	return ev, nil
}

// Ack sends the semi-sync reply for the binlog position file:pos (the end
// of a transaction): mariadbd then lets every commit at or before it
// return. It may be called from any goroutine. The Dumper never sends
// replies by itself.
func (d *Dumper) Ack(file string, pos uint64) error {
	if !d.semiSync {
		return fmt.Errorf("binlog: ack %s: %w: the dump is not semi-sync (Config.SemiSync)", Position{file, pos}, ErrConfig)
	}
	if err := (Position{file, pos}).validate(); err != nil {
		return fmt.Errorf("binlog: ack: %w", err)
	}
	// Packet: length(3) sequence(1)=0, then 0xef, position (8 bytes, little
	// endian), file name. Sequence 0: the source reads replies as new
	// packets (net_clear before each read).
	n := 1 + 8 + len(file)
	pkt := make([]byte, 4+n)
	pkt[0], pkt[1], pkt[2], pkt[3] = byte(n), byte(n>>8), byte(n>>16), 0
	pkt[4] = semiSyncMagic
	binary.LittleEndian.PutUint64(pkt[5:], pos)
	copy(pkt[13:], file)

	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	if d.closed.Load() {
		return ErrClosed
	}
	// The packet layer's net.Conn: the TLS connection when TLS is on.
	if _, err := d.conn.Conn.Conn.Write(pkt); err != nil {
		return fmt.Errorf("binlog: send semi-sync ack for %s to %s: %w", Position{file, pos}, d.cfg.Addr, err)
	}
	if m := d.cfg.Metrics; m != nil {
		m.acks.Inc()
	}
	d.cfg.Logger.Debug("semi-sync ack sent", "pos", Position{file, pos})
	return nil
}

// SemiSync reports whether the dump is semi-sync.
func (d *Dumper) SemiSync() bool { return d.semiSync }

// SourceServerID returns the source's server_id.
func (d *Dumper) SourceServerID() uint32 { return d.sourceID }

// Close ends the dump by closing the connection. It is safe to call more
// than once and concurrently with ReadEvent and Ack.
func (d *Dumper) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	if m := d.cfg.Metrics; m != nil {
		m.connected.Set(0)
	}
	// Close the network connection itself: client.Conn.Close would also
	// reset the packet sequence, which the reading goroutine owns.
	if err := d.conn.Conn.Conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("binlog: close dump connection: %w", err)
	}
	return nil
}

// classifyServerError marks server errors after which reconnecting cannot
// help as fatal: bad credentials and missing privileges (the operator must
// act) and ER_MASTER_FATAL_ERROR_READING_BINLOG (the position is gone).
func classifyServerError(err error) error {
	var me *mysql.MyError
	if !errors.As(err, &me) {
		return err
	}
	switch me.Code {
	case mysql.ER_ACCESS_DENIED_ERROR, mysql.ER_DBACCESS_DENIED_ERROR, mysql.ER_SPECIFIC_ACCESS_DENIED_ERROR,
		mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG:
		return &fatalError{fmt.Errorf("server error %d: %s", me.Code, me.Message)}
	}
	return fmt.Errorf("server error %d: %s", me.Code, me.Message)
}

// deadlineConn extends its read (write) deadline before every Read (Write):
// a read fails when no byte has arrived for the read timeout, however long
// the packet being read is.
type deadlineConn struct {
	net.Conn
	read, write atomic.Int64 // time.Duration; 0 means none
}

func (c *deadlineConn) setTimeouts(read, write time.Duration) {
	c.read.Store(int64(read))
	c.write.Store(int64(write))
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if t := time.Duration(c.read.Load()); t > 0 {
		if err := c.Conn.SetReadDeadline(time.Now().Add(t)); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Read(p)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		err = fmt.Errorf("link silent for %s: %w", time.Duration(c.read.Load()), err)
	}
	return n, err
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if t := time.Duration(c.write.Load()); t > 0 {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(t)); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(p)
}
