package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// ByteSize is an amount of bytes. In a file it is written as a plain number of
// bytes or with a 1024-based unit: B, KiB, MiB, GiB or TiB (64MiB, 1GiB).
type ByteSize int64

// Byte size units.
const (
	KiB ByteSize = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

var sizeUnits = []struct {
	name string
	size ByteSize
}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}, {"B", 1}}

// String formats s with the largest unit that divides it exactly, e.g.
// "64MiB", or as a plain number of bytes.
func (s ByteSize) String() string {
	for _, u := range sizeUnits[:4] {
		if s != 0 && s%u.size == 0 {
			return strconv.FormatInt(int64(s/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// parseByteSize parses a plain number of bytes or a number with a 1024-based
// unit. Decimal units (KB, MB, GB) are refused: whether they mean 1000 or 1024
// is a guess.
func parseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '_') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if num == "" {
		return 0, errors.New("not a size")
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(num, "_", ""), 10, 64)
	if err != nil {
		return 0, errors.New("not a size")
	}
	mult := ByteSize(0)
	if unit == "" {
		mult = 1
	}
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			mult = u.size
		}
	}
	if mult == 0 {
		switch strings.ToUpper(unit) {
		case "K", "KB", "M", "MB", "G", "GB", "T", "TB":
			return 0, fmt.Errorf("unit %q is ambiguous; use %s", unit, strings.ToUpper(unit[:1])+"iB")
		}
		return 0, errors.New("not a size")
	}
	if n > math.MaxInt64/int64(mult) {
		return 0, errors.New("too large")
	}
	return ByteSize(n) * mult, nil
}

// formatDuration writes d in the shortest exact form: "1h", "10s", "50ms".
func formatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d%time.Millisecond == 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	}
	return d.String()
}

// Checks named in `check:"..."` struct tags. Each returns "" when s is fine,
// or what is allowed.
var (
	nodeIDRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

	checks = map[string]struct {
		what string // noun for the error message and the docs
		ok   func(string) bool
	}{
		"nodeid":   {"node id (1-63 characters a-z, 0-9, _ and -, starting with a letter or digit)", nodeIDRE.MatchString},
		"listen":   {"listen address (host:port; an empty host means all interfaces, port 0 a free port)", func(s string) bool { return validListen(s) }},
		"hostport": {"address (host:port)", func(s string) bool { return validHostPort(s, true) }},
		"envname":  {"environment variable name (letters, digits and _, not starting with a digit)", envNameRE.MatchString},
		"ident":    {"name (1-64 characters, no control characters, no trailing space)", validIdent},
	}
)

func validHostPort(s string, needHost bool) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || (needHost && host == "") {
		return false
	}
	if strings.ContainsFunc(host, unicode.IsSpace) {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535 && port[0] != '+'
}

// validListen accepts host:port with an optional host and a port that may
// be 0 (the kernel picks a free one; tests use it).
func validListen(s string) bool {
	if _, port, err := net.SplitHostPort(s); err == nil && port == "0" {
		return validHostPort(strings.TrimSuffix(s, "0")+"1", false)
	}
	return validHostPort(s, false)
}

// validIdent accepts what MariaDB accepts as a (quoted) schema name.
func validIdent(s string) bool {
	if s == "" || len([]rune(s)) > 64 || strings.HasSuffix(s, " ") {
		return false
	}
	return !strings.ContainsFunc(s, unicode.IsControl)
}

// sameListener reports whether two listen addresses would collide.
func sameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wild(ha) || wild(hb)
}
