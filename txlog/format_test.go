package txlog

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rec  Record
	}{
		{"empty", Record{Seqno: 1}},
		{"all fields", makeRecord(42, 3, 1000)},
		{"no schemas", Record{Seqno: 7, Epoch: 1, GTID: "0-1-7", Events: []byte{1, 2, 3}}},
		{"unicode schema", Record{Seqno: 9, Schemas: []string{"", "données"}, FormatDesc: []byte{9}}},
		{"all flags", Record{Seqno: 1 << 62, Epoch: 1<<64 - 1, Flags: FlagDDL | FlagMultiSchema | FlagUnknownSchema | 1<<31,
			SourcePos: 1<<64 - 1, ServerID: 1<<32 - 1, Timestamp: 1<<32 - 1}},
		{"long strings", Record{Seqno: 2, GTID: strings.Repeat("g", 65535), SourceFile: strings.Repeat("f", 65535),
			Schemas: []string{strings.Repeat("s", 65535)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.rec.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			n, err := tt.rec.EncodedSize()
			if err != nil || n != len(b) {
				t.Fatalf("EncodedSize = %d, %v; encoding has %d bytes", n, err, len(b))
			}
			var got Record
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if !equalRecords(got, tt.rec) {
				t.Fatalf("round trip changed the record:\n got %s\nwant %s", describe(got), describe(tt.rec))
			}
			// The decoded record must not alias the input.
			for i := range b {
				b[i] = 0
			}
			if !equalRecords(got, tt.rec) {
				t.Fatal("decoded record aliases the encoded bytes")
			}
		})
	}
}

func TestAppendBinaryKeepsPrefix(t *testing.T) {
	r := makeRecord(5, 1, 10)
	prefix := []byte("prefix")
	b, err := r.AppendBinary(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if string(b[:len(prefix)]) != "prefix" {
		t.Fatalf("prefix overwritten: %q", b[:len(prefix)])
	}
	var got Record
	if err := got.UnmarshalBinary(b[len(prefix):]); err != nil || !equalRecords(got, r) {
		t.Fatalf("UnmarshalBinary after prefix: %v, %s", err, describe(got))
	}
}

func TestEncodedSizeRejects(t *testing.T) {
	long := strings.Repeat("x", 65536)
	tests := []struct {
		name string
		rec  Record
		want string
	}{
		{"gtid", Record{Seqno: 1, GTID: long}, "GTID is 65536 bytes"},
		{"source file", Record{Seqno: 1, SourceFile: long}, "source file name is 65536 bytes"},
		{"schema", Record{Seqno: 1, Schemas: []string{"a", long}}, "schema 1 is 65536 bytes"},
		{"schema count", Record{Seqno: 1, Schemas: make([]string, 65536)}, "65536 schemas"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.rec.MarshalBinary()
			if !errors.Is(err, ErrInvalidRecord) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("MarshalBinary error = %v, want ErrInvalidRecord containing %q", err, tt.want)
			}
		})
	}
}

// TestDecodeDetectsEveryFlippedByte flips each byte of an encoded record in
// turn: every one must be caught by a checksum or a structural check.
func TestDecodeDetectsEveryFlippedByte(t *testing.T) {
	r := makeRecord(3, 2, 64)
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x01
		if _, err := decodeRecord(c, true); err == nil {
			t.Errorf("flipping byte %d of %d went unnoticed", i, len(b))
		}
	}
	for n := 0; n < len(b); n++ {
		if _, err := decodeRecord(b[:n], true); err == nil {
			t.Errorf("record cut to %d of %d bytes decoded", n, len(b))
		}
	}
}

func TestFlagsString(t *testing.T) {
	tests := []struct {
		f    Flags
		want string
	}{
		{0, "-"},
		{FlagDDL, "DDL"},
		{FlagDDL | FlagMultiSchema, "DDL|MULTI_SCHEMA"},
		{FlagUnknownSchema, "UNKNOWN_SCHEMA"},
		{FlagDDL | 1<<10, "DDL|0x400"},
	}
	for _, tt := range tests {
		if got := tt.f.String(); got != tt.want {
			t.Errorf("Flags(%d).String() = %q, want %q", uint32(tt.f), got, tt.want)
		}
	}
}

// FuzzDecodeRecord feeds arbitrary bytes to the decoder: it must return an
// error or a record that encodes back to the same bytes, and never panic.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range []Record{{Seqno: 1}, makeRecord(2, 1, 10), makeRecord(3, 1, 300)} {
		b, err := r.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte("QTXL"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var rec Record
		if err := rec.UnmarshalBinary(data); err != nil {
			return
		}
		back, err := rec.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		if string(back) != string(data) {
			t.Fatalf("re-encoding differs: %d bytes in, %d bytes out", len(data), len(back))
		}
	})
}

// FuzzDecodeFields is like FuzzDecodeRecord but repairs the magic, version,
// length and both checksums first, so the fuzzer reaches the field decoding
// behind them.
func FuzzDecodeFields(f *testing.F) {
	for _, r := range []Record{{Seqno: 1}, makeRecord(2, 1, 10), makeRecord(3, 1, 300)} {
		b, err := r.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < minRecordSize {
			return
		}
		copy(data, magic[:])
		data[4] = formatVersion
		binary.LittleEndian.PutUint32(data[8:], uint32(len(data)))
		binary.LittleEndian.PutUint32(data[60:], crc32.Checksum(data[:60], castagnoli))
		body := data[:len(data)-crcSize]
		binary.LittleEndian.PutUint32(data[len(body):], crc32.Checksum(body, castagnoli))
		var rec Record
		if err := rec.UnmarshalBinary(data); err != nil {
			return
		}
		if n, err := rec.EncodedSize(); err != nil || n != len(data) {
			t.Fatalf("decoded record encodes to %d bytes (%v), input had %d", n, err, len(data))
		}
	})
}
