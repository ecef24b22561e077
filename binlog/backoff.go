package binlog

import "time"

// backoff returns how long to wait before reconnection attempt n (n >= 1
// after n consecutive failures): lo·2^(n-1), capped at hi, with jitter u in
// [0, 1) scaling it into [d/2, d). n <= 0 means no wait.
func backoff(n int, lo, hi time.Duration, u float64) time.Duration {
	if n <= 0 || hi <= 0 {
		return 0
	}
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(max(d, 0), hi)
	u = min(max(u, 0), 1)
	return d/2 + time.Duration(u*float64(d/2))
}
