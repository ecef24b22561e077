package txlog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

const segmentExt = ".seg"

// segment is one segment file and its in-memory index.
type segment struct {
	first   uint64   // seqno of the first record; the file's name
	path    string   // file path
	f       *os.File // open read-write for the log's lifetime
	offsets []uint32 // offsets[i] is the byte offset of record first+i
	size    int64    // bytes of whole records; the file's length
}

// segmentName returns the file name of the segment whose first seqno is first.
func segmentName(first uint64) string {
	return fmt.Sprintf("%020d%s", first, segmentExt)
}

// parseSegmentName returns the first seqno encoded in a segment file name.
func parseSegmentName(name string) (uint64, error) {
	digits, ok := strings.CutSuffix(name, segmentExt)
	if !ok || len(digits) != 20 {
		return 0, fmt.Errorf("segment name %q is not 20 digits and %q", name, segmentExt)
	}
	first, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || first == 0 {
		return 0, fmt.Errorf("segment name %q does not hold a seqno ≥ 1", name)
	}
	return first, nil
}

// count returns the number of records in the segment.
func (s *segment) count() uint64 { return uint64(len(s.offsets)) }

// last returns the seqno of the segment's last record, or first-1 when the
// segment is empty.
func (s *segment) last() uint64 { return s.first + s.count() - 1 }

// span returns the byte range [off, end) of the record at index i.
func (s *segment) span(i int) (off, end int64) {
	off = int64(s.offsets[i])
	if i+1 < len(s.offsets) {
		return off, int64(s.offsets[i+1])
	}
	return off, s.size
}

// boundary returns the byte offset at which record index i starts, or the
// segment's size for i == count.
func (s *segment) boundary(i int) int64 {
	if i < len(s.offsets) {
		return int64(s.offsets[i])
	}
	return s.size
}

// listSegments returns the segment files in dir sorted by first seqno. Files
// not ending in ".seg" are ignored.
func listSegments(dir string) ([]*segment, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("txlog: list %s: %w", dir, err)
	}
	var segs []*segment
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), segmentExt) {
			continue
		}
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("txlog: segment %s is not a regular file", filepath.Join(dir, e.Name()))
		}
		first, err := parseSegmentName(e.Name())
		if err != nil {
			return nil, fmt.Errorf("txlog: %s: %w", dir, err)
		}
		segs = append(segs, &segment{first: first, path: filepath.Join(dir, e.Name())})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].first < segs[j].first })
	return segs, nil
}

// scanResult is what scanning a segment file found.
type scanResult struct {
	offsets   []uint32
	size      int64  // bytes of whole, valid records
	lastEpoch uint64 // epoch of the last valid record, 0 if none
	torn      int64  // bytes after size that form a torn tail (only if allowTorn)
	reason    string // why the torn tail was recognized as one
}

// scanSegment reads every record of the segment file f (of the given size),
// checks both checksums and that seqnos run from s.first without gaps, and
// builds the offset index. Bodies are streamed through the checksum, so a
// large record is never held in memory.
//
// With allowTorn (the log's last segment), an incomplete record at the end of
// the file is reported as a torn tail instead of an error: a header cut short,
// a body cut short, a checksum mismatch in a record whose bytes run exactly to
// the end of the file, or a damaged header followed only by zero bytes (a file
// extended but never written). Everything else is a *CorruptError.
func scanSegment(s *segment, f *os.File, size int64, allowTorn bool) (scanResult, error) {
	var res scanResult
	br := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20)
	var hdr [headerSize]byte
	off := int64(0)
	next := s.first
	corrupt := func(reason string) error {
		return &CorruptError{Segment: s.path, Offset: off, Seqno: next, Reason: reason}
	}
	torn := func(reason string) (scanResult, error) {
		if !allowTorn {
			return res, corrupt(reason + " (not in the last segment)")
		}
		res.size = off
		res.torn = size - off
		res.reason = reason
		return res, nil
	}
	for off < size {
		remaining := size - off
		if remaining < headerSize {
			return torn(fmt.Sprintf("short header: %d of %d bytes", remaining, headerSize))
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return res, fmt.Errorf("txlog: read %s at offset %d: %w", s.path, off, err)
		}
		h, err := parseHeader(hdr[:])
		if err != nil {
			if allowTorn {
				zero, zerr := allZero(f, off, size)
				if zerr != nil {
					return res, fmt.Errorf("txlog: read %s at offset %d: %w", s.path, off, zerr)
				}
				if zero {
					return torn(fmt.Sprintf("zero-filled tail (%v)", err))
				}
			}
			return res, corrupt(err.Error())
		}
		if h.seqno != next {
			return res, corrupt(fmt.Sprintf("record holds seqno %d", h.seqno))
		}
		if int64(h.length) > remaining {
			return torn(fmt.Sprintf("short record: %d of %d bytes", remaining, h.length))
		}
		if off+int64(h.length) > 1<<32-1 {
			return res, corrupt("segment larger than 4 GiB")
		}
		crc := crc32.Update(0, castagnoli, hdr[:])
		for n := int(h.length) - headerSize - crcSize; n > 0; {
			chunk, err := br.Peek(min(n, br.Size()))
			if err != nil {
				return res, fmt.Errorf("txlog: read %s at offset %d: %w", s.path, off, err)
			}
			crc = crc32.Update(crc, castagnoli, chunk)
			if _, err := br.Discard(len(chunk)); err != nil {
				return res, fmt.Errorf("txlog: read %s at offset %d: %w", s.path, off, err)
			}
			n -= len(chunk)
		}
		var sum [crcSize]byte
		if _, err := io.ReadFull(br, sum[:]); err != nil {
			return res, fmt.Errorf("txlog: read %s at offset %d: %w", s.path, off, err)
		}
		if stored := binary.LittleEndian.Uint32(sum[:]); stored != crc {
			reason := fmt.Sprintf("record checksum mismatch: stored %08x, computed %08x", stored, crc)
			if off+int64(h.length) == size {
				return torn(reason + " in the last record")
			}
			return res, corrupt(reason)
		}
		res.offsets = append(res.offsets, uint32(off))
		res.lastEpoch = h.epoch
		off += int64(h.length)
		next++
	}
	res.size = off
	return res, nil
}

// allZero reports whether bytes [off, end) of f are all zero.
func allZero(f *os.File, off, end int64) (bool, error) {
	buf := make([]byte, 64<<10)
	for off < end {
		n := int(min(int64(len(buf)), end-off))
		if _, err := f.ReadAt(buf[:n], off); err != nil {
			return false, err
		}
		for _, b := range buf[:n] {
			if b != 0 {
				return false, nil
			}
		}
		off += int64(n)
	}
	return true, nil
}

// syncDir fsyncs a directory so that file creations and removals in it are durable.
func syncDir(d *os.File) error {
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
