package apply

import (
	"context"
	"sync"

	"github.com/quire-ha/quire/txlog"
)

// Reader yields log records in seqno order, waiting for the next one to be
// appended. *txlog.Reader satisfies it.
type Reader interface {
	Next(ctx context.Context) (txlog.Record, error)
}

// Source opens Readers on the transaction log.
type Source interface {
	// NewReader returns a Reader whose first record is seqno from.
	NewReader(from uint64) (Reader, error)
}

// SourceFunc adapts a function to Source, e.g. around (*txlog.Log).NewReader.
type SourceFunc func(from uint64) (Reader, error)

// NewReader calls f.
func (f SourceFunc) NewReader(from uint64) (Reader, error) { return f(from) }

// CommitIndex says how far the applier may apply: replicas apply only
// records that K members hold (DESIGN.md §2).
type CommitIndex interface {
	// WaitFor blocks until the commit index is at least seqno, or ctx is
	// done, and returns the commit index.
	WaitFor(ctx context.Context, seqno uint64) (uint64, error)
}

// Watermark is a CommitIndex that its owner advances, e.g. from the commit
// index carried on the log stream. The zero value is ready at 0.
type Watermark struct {
	mu sync.Mutex
	v  uint64
	ch chan struct{}
}

// Set raises the watermark to v; a lower v is ignored.
func (w *Watermark) Set(v uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if v <= w.v {
		return
	}
	w.v = v
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// Get returns the watermark.
func (w *Watermark) Get() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.v
}

// WaitFor implements CommitIndex.
func (w *Watermark) WaitFor(ctx context.Context, seqno uint64) (uint64, error) {
	for {
		w.mu.Lock()
		v := w.v
		if v >= seqno {
			w.mu.Unlock()
			return v, nil
		}
		if w.ch == nil {
			w.ch = make(chan struct{})
		}
		ch := w.ch
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return v, ctx.Err()
		}
	}
}
