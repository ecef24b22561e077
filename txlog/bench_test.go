package txlog

import (
	"context"
	"testing"
)

// BenchmarkReaderNext reads 2 KiB records sequentially.
func BenchmarkReaderNext(b *testing.B) {
	l := openLog(b, b.TempDir(), Options{})
	const n = 20000
	recs := make([]Record, 0, 100)
	for s := uint64(1); s <= n; s++ {
		recs = append(recs, makeRecord(s, 1, 2048))
		if len(recs) == cap(recs) {
			if err := l.Append(recs...); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	b.SetBytes(int64(l.Stats().Bytes / n))
	b.ResetTimer()
	var r *Reader
	for i := 0; i < b.N; i++ {
		if i%n == 0 {
			r, _ = l.NewReader(1)
		}
		if _, err := r.Next(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRead reads 2 KiB records by seqno.
func BenchmarkRead(b *testing.B) {
	l := openLog(b, b.TempDir(), Options{})
	const n = 20000
	appendN(b, l, 1, n, 1, 2048)
	b.SetBytes(int64(l.Stats().Bytes / n))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.Read(1 + uint64(i*7919)%n); err != nil {
			b.Fatal(err)
		}
	}
}
