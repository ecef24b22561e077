package manager

import (
	"context"
	"crypto/tls"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestNewClientChecksConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg    ClientConfig
		inside string
	}{
		{ClientConfig{Insecure: true}, "no manager addresses"},
		{ClientConfig{Addrs: []string{"h1"}, Insecure: true}, `"h1" is not host:port`},
		{ClientConfig{Addrs: []string{"h1:1", "h1:1"}, Insecure: true}, "listed twice"},
		{ClientConfig{Addrs: []string{"h1:1"}}, "no TLS configuration"},
		{ClientConfig{Addrs: []string{"h1:1"}, Insecure: true, TLS: &tls.Config{}}, "choose one"},
	} {
		if _, err := NewClient(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.inside) {
			t.Errorf("NewClient(%+v): %v, want an error containing %q", tc.cfg, err, tc.inside)
		}
	}
}

func TestReportRoundTrip(t *testing.T) {
	r := Report{
		NodeID: "b", Role: RoleReplica, Epoch: 3, DatabaseHealthy: true, ReadOnly: true, DurableSeqno: 10, LastEpoch: 2,
		CommitIndex: 9, AppliedSeqno: 8, Applied: map[string]uint64{"0": 8, "1": 9}, Degraded: true, Error: "x",
		LastCommitTime: time.UnixMicro(1_700_000_000_000_001).UTC(), AppliedCommitTime: time.UnixMicro(1_700_000_000_000_000).UTC(),
	}
	if got := ReportFromPB(ReportToPB(r)); !reflect.DeepEqual(got, r) {
		t.Errorf("round trip:\n got  %+v\n want %+v", got, r)
	}
	// AppliedSeqno 0 is derived from the channels.
	r.AppliedSeqno = 0
	if got := ReportFromPB(ReportToPB(r)); got.AppliedSeqno != 8 {
		t.Errorf("derived applied seqno %d, want the smallest channel's 8", got.AppliedSeqno)
	}
}

// A call to managers that are down fails with Unavailable after the retry
// timeout, naming the managers.
func TestClientGivesUp(t *testing.T) {
	c, err := NewClient(ClientConfig{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}, Insecure: true, RetryTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Status(context.Background())
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "127.0.0.1:1,127.0.0.1:2") {
		t.Errorf("status with every manager down: %v (code %s)", err, status.Code(err))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %s with a 300ms retry timeout", d)
	}
	c.Close()
	if _, err := c.Status(context.Background()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("call on a closed client: %v", err)
	}
}

func TestTLSFailure(t *testing.T) {
	for msg, want := range map[string]bool{
		`connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"`: true,
		`connection error: desc = "error reading server preface: remote error: tls: certificate required"`:                                                        true,
		`connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`:                                            false,
		`this manager is not the leader; no leader is known`:                                                                                                      false,
	} {
		if got := tlsFailure(msg); got != want {
			t.Errorf("tlsFailure(%q) = %v, want %v", msg, got, want)
		}
	}
}
