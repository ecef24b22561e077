package ship

import (
	"slices"
	"testing"
	"time"
)

func TestInFlightAcked(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	var f inFlight
	f.start(4)
	steps := []struct {
		sent  uint64 // 0: an ack instead
		ack   uint64
		nowMS int
		want  []time.Duration
		max   uint64
	}{
		{ack: 4, nowMS: 0, want: nil, max: 4}, // the replica's first report: nothing in flight
		{sent: 5, nowMS: 1, max: 5},
		{sent: 9, nowMS: 2, max: 9},
		{sent: 12, nowMS: 3, max: 12},
		{ack: 7, nowMS: 4, want: ms(3), max: 12},   // covers the batch ending 5, not the one ending 9
		{ack: 9, nowMS: 5, want: ms(3), max: 12},   // the batch ending 9
		{ack: 9, nowMS: 6, want: nil, max: 12},     // repeated
		{ack: 12, nowMS: 10, want: ms(7), max: 12}, // the last one
		{sent: 13, nowMS: 11, max: 13},
		{ack: 13, nowMS: 11, want: ms(0), max: 13},
	}
	for i, s := range steps {
		if s.sent != 0 {
			f.sent(s.sent, at(s.nowMS))
		} else if got := f.acked(s.ack, at(s.nowMS)); !slices.Equal(got, s.want) {
			t.Fatalf("step %d: ack %d: got %v, want %v", i, s.ack, got, s.want)
		}
		if got := f.max(); got != s.max {
			t.Fatalf("step %d: max %d, want %d", i, got, s.max)
		}
	}
}

func TestInFlightBounded(t *testing.T) {
	var f inFlight
	now := time.Now()
	for s := uint64(1); s <= maxInFlight+100; s++ {
		f.sent(s, now)
	}
	if len(f.batches) != maxInFlight {
		t.Fatalf("%d batches remembered, want at most %d", len(f.batches), maxInFlight)
	}
	if f.max() != maxInFlight+100 {
		t.Fatalf("max %d, want %d: untimed batches still bound the acks", f.max(), maxInFlight+100)
	}
	if got := len(f.acked(maxInFlight+100, now)); got != maxInFlight {
		t.Fatalf("ack of everything timed %d batches, want %d", got, maxInFlight)
	}
	if len(f.batches) != 0 {
		t.Fatalf("%d batches left after the last ack", len(f.batches))
	}
}
