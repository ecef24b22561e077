package ship

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/api/shippb"
	"github.com/quire-ha/quire/txlog"
)

func openLog(t *testing.T) *txlog.Log {
	t.Helper()
	l, err := txlog.Open(t.TempDir(), txlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func rec(seqno, epoch uint64, size int) txlog.Record {
	ev := make([]byte, size)
	for i := range ev {
		ev[i] = byte(seqno*7 + uint64(i)*13 + epoch)
	}
	return txlog.Record{
		Seqno: seqno, Epoch: epoch, GTID: fmt.Sprintf("0-1-%d", seqno), SourceFile: "binlog.000001",
		SourcePos: 4 + seqno*100, ServerID: 1, Timestamp: uint32(1700000000 + seqno),
		Schemas: []string{fmt.Sprintf("s%d", seqno%8)}, FormatDesc: []byte("fde"), Events: ev,
	}
}

func appendN(t *testing.T, l *txlog.Log, n int, epoch uint64, size int) {
	t.Helper()
	last := l.LastSeqno()
	recs := make([]txlog.Record, n)
	for i := range recs {
		recs[i] = rec(last+uint64(i)+1, epoch, size)
	}
	if err := l.AppendSync(recs...); err != nil {
		t.Fatal(err)
	}
}

// acks records what the server reports.
type acks struct {
	mu      sync.Mutex
	durable map[string]uint64
	up      map[string]bool
}

func (a *acks) Connected(n string)    { a.mu.Lock(); a.up[n] = true; a.mu.Unlock() }
func (a *acks) Disconnected(n string) { a.mu.Lock(); a.up[n] = false; a.mu.Unlock() }
func (a *acks) Durable(n string, s uint64) {
	a.mu.Lock()
	a.durable[n] = s
	a.mu.Unlock()
}
func (a *acks) get(n string) uint64 { a.mu.Lock(); defer a.mu.Unlock(); return a.durable[n] }

func serve(t *testing.T, s *Server) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	s.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func digest(t *testing.T, l *txlog.Log) [32]byte {
	t.Helper()
	h := sha256.New()
	for s := l.FirstSeqno(); s <= l.LastSeqno(); s++ {
		r, err := l.Read(s)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := r.MarshalBinary()
		h.Write(b)
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

func TestShipToTwoReplicas(t *testing.T) {
	primary := openLog(t)
	appendN(t, primary, 100, 1, 300)
	a := &acks{durable: map[string]uint64{}, up: map[string]bool{}}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ServerConfig{Logger: testLogger(t), Node: "db1", Log: primary, Acks: a, BatchRecords: 64, Metrics: m})
	srv.SetRole(true, 1)
	conn := serve(t, srv)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var replicas []*txlog.Log
	var recvs []*Receiver
	var wg sync.WaitGroup
	for _, name := range []string{"db2", "db3"} {
		l := openLog(t)
		r := NewReceiver(ReceiverConfig{Logger: testLogger(t), Node: name, Log: l})
		replicas, recvs = append(replicas, l), append(recvs, r)
		wg.Add(1)
		go func() { defer wg.Done(); r.Run(ctx, conn) }()
	}
	// Records appended while streaming arrive too, including a big one.
	appendN(t, primary, 1000, 1, 200)
	appendN(t, primary, 1, 1, 20<<20)
	appendN(t, primary, 50, 1, 100)
	want := primary.LastSeqno()
	for i, l := range replicas {
		name := []string{"db2", "db3"}[i]
		waitFor(t, name+" durable", 30*time.Second, func() bool { return l.DurableSeqno() == want && a.get(name) == want })
		// Without a gate the commit index is the primary's durable seqno.
		waitFor(t, name+" commit index", 10*time.Second, func() bool { return recvs[i].CommitIndex() == want })
		if digest(t, l) != digest(t, primary) {
			t.Fatalf("%s log differs from the primary's", name)
		}
		// Every batch was acknowledged, so every one was timed: at least
		// the 1051 records streamed in batches of at most 64.
		h := &dto.Metric{}
		if err := m.ackRTT.WithLabelValues(name).(prometheus.Metric).Write(h); err != nil {
			t.Fatal(err)
		}
		if n, sum := h.GetHistogram().GetSampleCount(), h.GetHistogram().GetSampleSum(); n < 1051/64 || sum <= 0 {
			t.Errorf("%s: %d acks timed, %.6f s in all; want at least %d batches and a positive time", name, n, sum, 1051/64)
		}
	}
	cancel()
	wg.Wait()
}

func TestForkTruncates(t *testing.T) {
	primary := openLog(t)
	appendN(t, primary, 20, 1, 50)
	appendN(t, primary, 10, 3, 50) // epoch 3: the new primary's records 21..30
	replica := openLog(t)
	appendN(t, replica, 20, 1, 50)
	appendN(t, replica, 15, 2, 50) // epoch 2 tail 21..35 that never committed
	srv := NewServer(ServerConfig{Logger: testLogger(t), Node: "db1", Log: primary})
	srv.SetRole(true, 3)
	conn := serve(t, srv)
	r := NewReceiver(ReceiverConfig{Logger: testLogger(t), Node: "db2", Log: replica})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := r.Receive(ctx, conn)
	if !errors.Is(err, ErrForked) {
		t.Fatalf("first session: %v, want ErrForked", err)
	}
	if s, e := replica.Last(); s != 20 || e != 1 {
		t.Fatalf("after fork: last (%d, %d), want (20, 1)", s, e)
	}
	go r.Run(ctx, conn)
	waitFor(t, "replica to catch up", 10*time.Second, func() bool { return replica.DurableSeqno() == 30 })
	if digest(t, replica) != digest(t, primary) {
		t.Fatal("replica log differs after fork and catch-up")
	}

	// A fork below what the applier already applied is refused, not obeyed.
	replica2 := openLog(t)
	appendN(t, replica2, 20, 1, 50)
	appendN(t, replica2, 15, 2, 50)
	r2 := NewReceiver(ReceiverConfig{Logger: testLogger(t), Node: "db3", Log: replica2, KeepFrom: func() uint64 { return 25 }})
	err = r2.Receive(ctx, conn)
	if err == nil || !strings.Contains(err.Error(), "refusing to truncate") || replica2.LastSeqno() != 35 {
		t.Fatalf("fork below applied: %v, last %d", err, replica2.LastSeqno())
	}
}

func TestStaleAndBadHellos(t *testing.T) {
	primary := openLog(t)
	appendN(t, primary, 10, 2, 50)
	srv := NewServer(ServerConfig{Logger: testLogger(t), Node: "db1", Log: primary})
	conn := serve(t, srv)
	ctx := context.Background()

	open := func(h *shippb.Hello) error {
		st, err := shippb.NewLogShippingClient(conn).Stream(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&shippb.Up{Msg: &shippb.Up_Hello{Hello: h}}); err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	// Not primary yet.
	if err := open(&shippb.Hello{NodeId: "db2", Epoch: 2, NextSeqno: 1}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("not primary: %v", err)
	}
	srv.SetRole(true, 2)
	for _, tc := range []struct {
		h    *shippb.Hello
		code codes.Code
		msg  string
	}{
		{&shippb.Hello{NodeId: "db2", Epoch: 2, NextSeqno: 13, LastEpoch: 2}, codes.OutOfRange, "beyond this log's end 10"},
		{&shippb.Hello{NodeId: "db2", Epoch: 2, NextSeqno: 3, LastEpoch: 7}, codes.InvalidArgument, "unknown"},
		{&shippb.Hello{NodeId: "db2", Epoch: 3, NextSeqno: 1}, codes.FailedPrecondition, "no longer the primary"},
		{&shippb.Hello{NodeId: "", Epoch: 2, NextSeqno: 1}, codes.InvalidArgument, "node id is empty"},
		{&shippb.Hello{NodeId: "db2", Epoch: 2, NextSeqno: 0}, codes.InvalidArgument, "seqno 0"},
	} {
		err := open(tc.h)
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("hello %v: %v, want %v %q", tc.h, err, tc.code, tc.msg)
		}
	}
	// An ack as first message is refused.
	st, err := shippb.NewLogShippingClient(conn).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&shippb.Up{Msg: &shippb.Up_Ack{Ack: &shippb.Ack{DurableSeqno: 5}}})
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ack first: %v", err)
	}
	// Garbage bytes instead of a protobuf message.
	gst, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
		"/quire.ship.v1.LogShipping/Stream", grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := gst.SendMsg([]byte{0xff, 0xff, 0xff, 0x07, 0x01, 0x02}); err != nil {
		t.Fatal(err)
	}
	var out []byte
	if err := gst.RecvMsg(&out); status.Code(err) == codes.OK {
		t.Errorf("garbage hello accepted")
	}
	// None of it changed the primary's log.
	if s, e := primary.Last(); s != 10 || e != 2 {
		t.Fatalf("primary log changed: (%d, %d)", s, e)
	}
	// A replica that knows a newer epoch refuses an older primary's accept.
	srv.SetRole(true, 2)
	l := openLog(t)
	r := NewReceiver(ReceiverConfig{Logger: testLogger(t), Node: "db3", Log: l, KnownEpoch: func() uint64 { return 5 }})
	if err := r.Receive(ctx, conn); err == nil || status.Code(errors.Unwrap(err)) != codes.FailedPrecondition && !errors.Is(err, ErrStalePrimary) {
		t.Fatalf("stale primary: %v", err)
	}
	if l.LastSeqno() != 0 {
		t.Fatal("replica appended records from a stale primary")
	}
}

func TestDemotionClosesStreams(t *testing.T) {
	primary := openLog(t)
	appendN(t, primary, 5, 1, 50)
	srv := NewServer(ServerConfig{Logger: testLogger(t), Node: "db1", Log: primary})
	srv.SetRole(true, 1)
	conn := serve(t, srv)
	l := openLog(t)
	r := NewReceiver(ReceiverConfig{Logger: testLogger(t), Node: "db2", Log: l})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Receive(ctx, conn) }()
	waitFor(t, "first records", 10*time.Second, func() bool { return l.DurableSeqno() == 5 })
	srv.SetRole(false, 2)
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("stream ended without error")
		}
	case <-ctx.Done():
		t.Fatal("stream survived demotion")
	}
	appendN(t, primary, 5, 1, 50)
	if err := r.Receive(ctx, conn); status.Code(errors.Unwrap(err)) != codes.FailedPrecondition && !strings.Contains(fmt.Sprint(err), "not the primary") {
		t.Fatalf("after demotion: %v", err)
	}
	if l.LastSeqno() != 5 {
		t.Fatalf("replica received %d records from a demoted primary", l.LastSeqno())
	}
}

func TestAckBeyondSentRejected(t *testing.T) {
	primary := openLog(t)
	appendN(t, primary, 3, 1, 50)
	srv := NewServer(ServerConfig{Logger: testLogger(t), Node: "db1", Log: primary})
	srv.SetRole(true, 1)
	conn := serve(t, srv)
	st, err := shippb.NewLogShippingClient(conn).Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&shippb.Up{Msg: &shippb.Up_Hello{Hello: &shippb.Hello{NodeId: "db2", Epoch: 1, NextSeqno: 1}}})
	st.Send(&shippb.Up{Msg: &shippb.Up_Ack{Ack: &shippb.Ack{DurableSeqno: 99}}})
	for {
		_, err := st.Recv()
		if err != nil {
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "only") {
				t.Fatalf("ack beyond sent: %v", err)
			}
			return
		}
	}
}

// rawCodec sends bytes as they are, to put garbage on the wire.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// TestCommitIndexNeverAheadOfDurable streams records appended one at a time
// (the replica appends while its syncer fsyncs) and checks at every change
// of the replica's commit index that it does not exceed what the replica's
// own log holds durably: the applier must never apply a record a crash of
// the replica could take back. The commit index is read first and the
// durable seqno second, so a report can only err towards passing; a
// receiver that capped the commit index at the appended seqno failed about
// half of some 1200 checks.
func TestCommitIndexNeverAheadOfDurable(t *testing.T) {
	primary := openLog(t)
	srv := NewServer(ServerConfig{Logger: testLogger(t), Node: "db1", Log: primary, BatchRecords: 8})
	srv.SetRole(true, 1)
	conn := serve(t, srv)
	l := openLog(t)
	r := NewReceiver(ReceiverConfig{Logger: testLogger(t), Node: "db2", Log: l})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.Run(ctx, conn) }()
	var checks, violations int
	go func() {
		defer wg.Done()
		for {
			ch := r.Changed()
			c := r.CommitIndex()
			if d := l.DurableSeqno(); c > d {
				violations++
				t.Errorf("commit index %d is ahead of the replica's durable seqno %d", c, d)
			}
			checks++
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
		}
	}()
	for range 1500 {
		appendN(t, primary, 1, 1, 64)
	}
	want := primary.LastSeqno()
	waitFor(t, "the commit index to reach the end", 30*time.Second, func() bool { return r.CommitIndex() == want })
	cancel()
	wg.Wait()
	if checks < 10 {
		t.Fatalf("only %d commit-index changes seen", checks)
	}
	t.Logf("%d commit-index changes checked, %d violations", checks, violations)
}

// TestStreamState: Stream reports no stream (lost since the receiver was
// made) before the primary accepts, a live one while it streams, and a
// loss again, counted from the stream's end, once the primary is demoted.
func TestStreamState(t *testing.T) {
	primary := openLog(t)
	appendN(t, primary, 3, 1, 50)
	srv := NewServer(ServerConfig{Logger: testLogger(t), Node: "db1", Log: primary})
	srv.SetRole(true, 1)
	conn := serve(t, srv)
	r := NewReceiver(ReceiverConfig{Logger: testLogger(t), Node: "db2", Log: openLog(t)})
	time.Sleep(20 * time.Millisecond) // some time without a stream
	if live, lost := r.Stream(); live || lost < 20*time.Millisecond {
		t.Fatalf("before any stream: Stream() = %t, %s; want false, ≥ 20ms", live, lost)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Receive(ctx, conn) }()
	waitFor(t, "a live stream", 10*time.Second, func() bool { live, lost := r.Stream(); return live && lost == 0 })
	srv.SetRole(false, 2)
	<-done
	live, lost := r.Stream()
	if live || lost > time.Second {
		t.Fatalf("after the stream ended: Stream() = %t, %s; want false and a loss counted from its end", live, lost)
	}
}
