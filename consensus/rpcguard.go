package consensus

import (
	"bufio"
	"fmt"
	"io"
	"net"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// Raft's RPC types on the wire (hashicorp/raft net_transport.go).
const (
	rpcAppendEntries uint8 = iota
	rpcRequestVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcRequestPreVote
)

// rpcHead is the part of every Raft request the guard reads: the header
// (sender's ID and address) and, for InstallSnapshot, the size of the
// snapshot that follows the request.
type rpcHead struct {
	raft.RPCHeader
	Size int64
}

// rpcGuard sits between an authenticated connection and raft's transport.
// hashicorp/raft does not check that the server ID in an RPC's header is
// the sender's, so one manager could speak for another; the guard reads
// each request as raft will, checks that its ID is the certificate's name,
// and passes the bytes on unchanged. A mismatch closes the connection.
type rpcGuard struct {
	net.Conn
	name string
	src  *bufio.Reader
	rec  recorder
	dec  *codec.Decoder
	out  []byte // bytes checked and not yet read by raft
	raw  int64  // snapshot bytes to pass through unchecked
	err  error
}

func newRPCGuard(c net.Conn, name string) *rpcGuard {
	g := &rpcGuard{Conn: c, name: name, src: bufio.NewReaderSize(c, 64<<10)}
	g.rec.r = g.src
	g.dec = codec.NewDecoder(&g.rec, &codec.MsgpackHandle{})
	return g
}

// Read implements net.Conn for raft.
func (g *rpcGuard) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(g.out) == 0 {
		if g.raw > 0 {
			n, err := g.src.Read(p[:min(int64(len(p)), g.raw)])
			g.raw -= int64(n)
			return n, err
		}
		if g.err != nil {
			return 0, g.err
		}
		if err := g.next(); err != nil {
			g.err = err
			if len(g.out) == 0 {
				return 0, err
			}
		}
	}
	n := copy(p, g.out)
	g.out = g.out[n:]
	return n, nil
}

// next reads and checks one request.
func (g *rpcGuard) next() error {
	t, err := g.src.ReadByte()
	if err != nil {
		return err
	}
	g.rec.buf = append(g.rec.buf[:0], t)
	var h rpcHead
	switch t {
	case rpcAppendEntries, rpcRequestVote, rpcInstallSnapshot, rpcTimeoutNow, rpcRequestPreVote:
	default:
		return g.refuse(fmt.Errorf("unknown Raft RPC type %d", t))
	}
	if err := g.dec.Decode(&h); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if err := rpcSenderAllowed(g.name, h.ID); err != nil {
		return g.refuse(err)
	}
	if t == rpcInstallSnapshot {
		if h.Size < 0 {
			return g.refuse(fmt.Errorf("InstallSnapshot with size %d", h.Size))
		}
		g.raw = h.Size
	}
	g.out = g.rec.buf
	return nil
}

func (g *rpcGuard) refuse(err error) error {
	g.Conn.Close()
	return fmt.Errorf("consensus: transport: connection of manager %q closed: %w", g.name, err)
}

// rpcSenderAllowed is the guard's decision: the RPC's server ID must be
// the name of the certificate the connection was authenticated with.
func rpcSenderAllowed(certName string, id []byte) error {
	if string(id) != certName {
		return fmt.Errorf("a Raft RPC names server %q, but the connection's certificate is manager %q", id, certName)
	}
	return nil
}

// recorder keeps the bytes the decoder reads, so that they can be passed
// on to raft unchanged.
type recorder struct {
	r   *bufio.Reader
	buf []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

func (r *recorder) ReadByte() (byte, error) {
	b, err := r.r.ReadByte()
	if err == nil {
		r.buf = append(r.buf, b)
	}
	return b, err
}

func (r *recorder) UnreadByte() error {
	if err := r.r.UnreadByte(); err != nil {
		return err
	}
	r.buf = r.buf[:len(r.buf)-1]
	return nil
}
