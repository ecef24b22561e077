package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Error is one problem found in a configuration file.
type Error struct {
	// File is the file name as given to the loader.
	File string
	// Line is the 1-based line of the offending key or value, or 0 when the
	// problem has no single place (a missing key, an empty file).
	Line int
	// Path is the full key path, e.g. "apply.channels" or "peers[1].id";
	// empty for problems with the document as a whole.
	Path string
	// Msg says what is wrong and what is allowed.
	Msg string

	// pathInMsg is set when Msg already names the path (unknown keys).
	pathInMsg bool
}

// Error formats the problem as "file:line: path: message".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" && !e.pathInMsg {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// errorList collects the problems of one file.
type errorList struct {
	file string
	errs []*Error
}

func (l *errorList) add(line int, path, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: l.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// err returns nil or the problems joined, ordered by line and then by path.
func (l *errorList) err() error {
	if len(l.errs) == 0 {
		return nil
	}
	sort.SliceStable(l.errs, func(i, j int) bool {
		a, b := l.errs[i], l.errs[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Path < b.Path
	})
	errs := make([]error, len(l.errs))
	for i, e := range l.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// Errors returns the individual problems in err, as returned by the loaders of
// this package, in order. It returns nil if err holds none.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *Error:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}
