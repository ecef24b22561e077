package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// This file holds a small reflective decoder from a yaml.Node tree into the
// configuration structs. It exists because yaml.v3's own errors do not name
// the key path, stop at the first problem and accept unknown keys by default.
//
// Struct tags drive it:
//
//	yaml:"name"          the key; "-" skips the field
//	check:"a,b"          required, unique (lists), and named checks (see checks)
//	enum:"x,y"           the allowed values of a string
//	range:"lo..hi"       inclusive bounds of an integer, duration or size
//
// Decoding records each key's line; validation then walks the filled-in
// struct (defaults included) and checks the tags.

var (
	durationType = reflect.TypeFor[time.Duration]()
	byteSizeType = reflect.TypeFor[ByteSize]()
)

// fieldSpec is the parsed tag set of one struct field.
type fieldSpec struct {
	index    int
	name     string
	required bool
	unique   bool
	checks   []string
	enum     []string
	hasRange bool
	min, max int64
}

var specCache sync.Map // reflect.Type → []fieldSpec

// fieldsOf returns the keys of struct type t in declaration order. Bad tags
// are programming errors and panic (the package tests load every struct).
func fieldsOf(t reflect.Type) []fieldSpec {
	if fs, ok := specCache.Load(t); ok {
		return fs.([]fieldSpec)
	}
	var fs []fieldSpec
	for i := range t.NumField() {
		sf := t.Field(i)
		name := sf.Tag.Get("yaml")
		if name == "" || name == "-" {
			continue
		}
		f := fieldSpec{index: i, name: name}
		if c := sf.Tag.Get("check"); c != "" {
			for _, c := range strings.Split(c, ",") {
				switch c {
				case "required":
					f.required = true
				case "unique":
					f.unique = true
				default:
					if _, ok := checks[c]; !ok {
						panic(fmt.Sprintf("config: %s.%s: unknown check %q", t.Name(), sf.Name, c))
					}
					f.checks = append(f.checks, c)
				}
			}
		}
		if e := sf.Tag.Get("enum"); e != "" {
			f.enum = strings.Split(e, ",")
		}
		if r := sf.Tag.Get("range"); r != "" {
			lo, hi, ok := strings.Cut(r, "..")
			var err1, err2 error
			f.min, err1 = parseBound(sf.Type, lo)
			f.max, err2 = parseBound(sf.Type, hi)
			if !ok || err1 != nil || err2 != nil || f.min > f.max {
				panic(fmt.Sprintf("config: %s.%s: bad range %q", t.Name(), sf.Name, r))
			}
			f.hasRange = true
		}
		fs = append(fs, f)
	}
	specCache.Store(t, fs)
	return fs
}

func parseBound(t reflect.Type, s string) (int64, error) {
	switch t {
	case durationType:
		d, err := time.ParseDuration(s)
		return int64(d), err
	case byteSizeType:
		n, err := parseByteSize(s)
		return int64(n), err
	}
	return strconv.ParseInt(s, 10, 64)
}

// formatInt formats a value of an integer-like field type for messages.
func formatInt(t reflect.Type, v int64) string {
	switch t {
	case durationType:
		return formatDuration(time.Duration(v))
	case byteSizeType:
		return ByteSize(v).String()
	}
	return strconv.FormatInt(v, 10)
}

func (f *fieldSpec) rangeText(t reflect.Type) string {
	return formatInt(t, f.min) + ".." + formatInt(t, f.max)
}

// refuser is implemented by structs that refuse some keys with a message of
// their own (a password in the file, say) rather than "unknown key".
type refuser interface {
	refuseKey(path string) (msg string, refused bool)
}

// decoder decodes one file.
type decoder struct {
	errorList
	lines map[string]int  // key path → line of the key or list element
	bad   map[string]bool // key paths whose value could not be decoded
}

// decode parses data and decodes it into v, a pointer to a struct holding
// the defaults, then checks the struct tags. If the document itself is
// unusable, it reports only that and returns ok == false.
func decode(data []byte, file string, v any) (d *decoder, ok bool) {
	d = &decoder{errorList: errorList{file: file}, lines: map[string]int{}, bad: map[string]bool{}}
	rv := reflect.ValueOf(v).Elem()
	root := d.parse(data, rv.Type())
	if root == nil {
		return d, false
	}
	d.decodeStruct(root, rv, "")
	d.validateStruct(rv, "")
	return d, true
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlParserErrors are the messages of yaml.v3's parser (as opposed to its
// scanner). yaml.v3 reports their line 0-based, and omits it on the first
// line; scanner errors are 1-based but also omit line 1.
var yamlParserErrors = []string{
	"did not find expected",
	"found undefined tag handle",
	"found duplicate %YAML directive",
	"found duplicate %TAG directive",
	"found incompatible YAML document",
}

// yamlReaderErrors are yaml.v3's messages about the input's encoding, which
// carry no line.
var yamlReaderErrors = []string{"UTF-8", "Unicode", "control characters", "input error"}

// yamlErrorLine returns the 1-based line (0 if unknown) and the message of
// a yaml.v3 syntax error.
func yamlErrorLine(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	isParser := slices.ContainsFunc(yamlParserErrors, func(p string) bool { return strings.HasPrefix(msg, p) })
	isReader := slices.ContainsFunc(yamlReaderErrors, func(p string) bool { return strings.Contains(msg, p) })
	switch {
	case isParser:
		line++
	case line == 0 && !isReader:
		line = 1
	}
	return line, msg
}

// parse returns the root mapping of the single document in data, or nil after
// recording why there is none.
func (d *decoder) parse(data []byte, t reflect.Type) (root *yaml.Node) {
	defer func() {
		if r := recover(); r != nil { // yaml.v3 has panicked on odd input before
			root = nil
			d.add(0, "", "invalid YAML: %v", r)
		}
	}()
	syntax := func(err error) {
		line, msg := yamlErrorLine(err)
		d.add(line, "", "invalid YAML: %s", msg)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.add(0, "", "the file is empty; it must hold a mapping of settings (%s)", keyList(t))
		} else {
			syntax(err)
		}
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		syntax(err)
		return nil
	default:
		d.add(next.Line, "", "a second YAML document starts here; the file must hold exactly one")
		return nil
	}
	if len(doc.Content) != 1 {
		d.add(0, "", "the file holds no settings; it must hold a mapping of settings (%s)", keyList(t))
		return nil
	}
	root = resolve(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		if isNull(root) {
			d.add(0, "", "the file holds no settings; it must hold a mapping of settings (%s)", keyList(t))
		} else {
			d.add(root.Line, "", "the document must be a mapping of settings (%s), not %s", keyList(t), kindName(root))
		}
		return nil
	}
	return root
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

func kindName(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case isNull(n):
		return "no value"
	case n.Kind == yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "an alias"
}

func keyList(t reflect.Type) string {
	var names []string
	for _, f := range fieldsOf(t) {
		names = append(names, f.name)
	}
	return strings.Join(names, ", ")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var plainKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// mapPath is the path of a map entry: apply.shard_map.sales, or
// apply.shard_map["a.b"] when the key is not a plain word.
func mapPath(path, key string) string {
	if plainKeyRE.MatchString(key) {
		return path + "." + key
	}
	return path + "[" + strconv.Quote(key) + "]"
}

func indexPath(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// line returns the line of path, or of its closest present parent, or 0.
func (d *decoder) line(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

// present reports whether path was set in the file.
func (d *decoder) present(path string) bool {
	_, ok := d.lines[path]
	return ok
}

// fail records a problem with the value at path and marks it undecodable.
func (d *decoder) fail(line int, path, format string, args ...any) {
	d.bad[path] = true
	d.add(line, path, format, args...)
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	n = resolve(n)
	if isNull(n) { // "section:" with nothing under it keeps the defaults
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n.Line, path, "expected a mapping, got %s", kindName(n))
		return
	}
	fields := fieldsOf(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.add(k.Line, path, "keys must be plain strings, got %s", kindName(k))
			continue
		}
		name := k.Value
		p := join(path, name)
		if first, dup := seen[name]; dup {
			d.fail(k.Line, p, "duplicate key (first set on line %d)", first)
			continue
		}
		seen[name] = k.Line
		idx := slices.IndexFunc(fields, func(f fieldSpec) bool { return f.name == name })
		if idx < 0 {
			d.unknownKey(k, v, path, name, fields)
			continue
		}
		d.lines[p] = k.Line
		f := &fields[idx]
		d.decodeValue(val, v.Field(f.index), p, f)
	}
}

func (d *decoder) unknownKey(k *yaml.Node, v reflect.Value, path, name string, fields []fieldSpec) {
	p := join(path, name)
	if r, ok := v.Interface().(refuser); ok {
		if msg, refused := r.refuseKey(p); refused {
			d.fail(k.Line, p, "%s", msg)
			return
		}
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	where := ""
	if path != "" {
		where = " in " + path
	}
	msg := fmt.Sprintf("unknown key %q (allowed%s: %s)", p, where, strings.Join(names, ", "))
	if s := suggest(name, names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", join(path, s))
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: k.Line, Path: p, Msg: msg, pathInMsg: true})
}

// suggest returns the candidate closest to name if it is close enough to be a
// likely typo.
func suggest(name string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if dist := editDistance(name, c); dist < bestDist && dist*3 <= len(c) {
			best, bestDist = c, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// scalar returns the text of a scalar node, or records that n is not one.
func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	switch {
	case isNull(n):
		d.fail(n.Line, path, "has no value (expected %s)", want)
	case n.Kind == yaml.ScalarNode:
		return n.Value, true
	default:
		d.fail(n.Line, path, "expected %s, got %s", want, kindName(n))
	}
	return "", false
}

const (
	wantDuration = "a duration (e.g. 10s, 1m)"
	wantSize     = "a size (e.g. 64MiB, 1GiB, 1048576)"
)

// decodeValue decodes n into v. f is the field's spec, or nil for list
// elements and map values.
func (d *decoder) decodeValue(n *yaml.Node, v reflect.Value, path string, f *fieldSpec) {
	n = resolve(n)
	switch v.Type() {
	case durationType:
		s, ok := d.scalar(n, path, wantDuration)
		if !ok {
			return
		}
		dur, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
				d.fail(n.Line, path, "%q is not a duration: add a unit (e.g. %ss, %sms)", s, s, s)
			} else {
				d.fail(n.Line, path, "%q is not %s", s, wantDuration)
			}
			return
		}
		v.SetInt(int64(dur))
		return
	case byteSizeType:
		s, ok := d.scalar(n, path, wantSize)
		if !ok {
			return
		}
		size, err := parseByteSize(s)
		if err != nil {
			if strings.HasPrefix(err.Error(), "unit") {
				d.fail(n.Line, path, "%q is not a size: %v", s, err)
			} else {
				d.fail(n.Line, path, "%q is not %s", s, wantSize)
			}
			return
		}
		v.SetInt(int64(size))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.String:
		if s, ok := d.scalar(n, path, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		s, ok := d.scalar(n, path, "true or false")
		if !ok {
			return
		}
		switch s {
		case "true", "True", "TRUE":
			v.SetBool(true)
		case "false", "False", "FALSE":
			v.SetBool(false)
		default:
			d.fail(n.Line, path, "%q is not a boolean (allowed: true, false)", s)
		}
	case reflect.Int, reflect.Int64:
		s, ok := d.scalar(n, path, "an integer")
		if !ok {
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange) || err == nil && v.OverflowInt(i):
			allowed := ""
			if f != nil && f.hasRange {
				allowed = " (allowed " + f.rangeText(v.Type()) + ")"
			}
			d.fail(n.Line, path, "%s is out of range%s", s, allowed)
		case err != nil:
			d.fail(n.Line, path, "%q is not an integer", s)
		default:
			v.SetInt(i)
		}
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	default:
		panic(fmt.Sprintf("config: %s: unsupported field type %s", path, v.Type()))
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) { // "key:" with nothing under it is an empty list
		v.Set(reflect.Zero(v.Type()))
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n.Line, path, "expected a list, got %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, e := range n.Content {
		e = resolve(e)
		p := indexPath(path, i)
		d.lines[p] = e.Line
		d.decodeValue(e, s.Index(i), p, nil)
	}
	v.Set(s)
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		panic(fmt.Sprintf("config: %s: unsupported map type %s", path, t))
	}
	if isNull(n) {
		v.Set(reflect.Zero(t))
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n.Line, path, "expected a mapping, got %s", kindName(n))
		return
	}
	m := reflect.MakeMapWithSize(t, len(n.Content)/2)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode || isNull(k) {
			d.add(k.Line, path, "keys must be plain strings, got %s", kindName(k))
			continue
		}
		p := mapPath(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.fail(k.Line, p, "duplicate key (first set on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		d.lines[p] = k.Line
		e := reflect.New(t.Elem()).Elem()
		d.decodeValue(val, e, p, nil)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), e)
	}
	v.Set(m)
}

// validateStruct checks the tags of every field of v, defaults included.
func (d *decoder) validateStruct(v reflect.Value, path string) {
	for _, f := range fieldsOf(v.Type()) {
		p := join(path, f.name)
		if d.bad[p] {
			continue
		}
		fv := v.Field(f.index)
		if f.required && (fv.IsZero() || fv.Kind() == reflect.Slice && fv.Len() == 0) {
			if d.present(p) {
				d.fail(d.line(p), p, "must not be empty")
			} else {
				d.fail(d.line(p), p, "required key is missing")
			}
			continue
		}
		d.validateValue(fv, p, &f)
	}
}

func (d *decoder) validateValue(v reflect.Value, path string, f *fieldSpec) {
	if f.hasRange {
		if i := v.Int(); i < f.min || i > f.max {
			d.fail(d.line(path), path, "%s is out of range (allowed %s)", formatInt(v.Type(), i), f.rangeText(v.Type()))
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.validateStruct(v, path)
	case reflect.String:
		d.checkString(v.String(), path, f, d.present(path))
	case reflect.Slice:
		first := map[string]string{}
		for i := range v.Len() {
			p := indexPath(path, i)
			if d.bad[p] {
				continue
			}
			e := v.Index(i)
			if e.Kind() == reflect.Struct {
				d.validateStruct(e, p)
				continue
			}
			s := e.String()
			d.checkString(s, p, f, true)
			if f.unique {
				if q, dup := first[s]; dup {
					d.fail(d.line(p), p, "%q is listed twice (also at %s)", s, q)
				} else {
					first[s] = p
				}
			}
		}
	case reflect.Map:
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := mapPath(path, k)
			if d.bad[p] {
				continue
			}
			if !d.checkString(k, p, f, true) {
				continue
			}
			d.checkString(v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key())).String(), p, f, true)
		}
	}
}

// checkString applies the enum and named checks of f to s and reports
// whether s passed. Unset optional strings are not checked.
func (d *decoder) checkString(s, path string, f *fieldSpec, set bool) bool {
	if s == "" && !set {
		return true
	}
	if len(f.enum) > 0 && !slices.Contains(f.enum, s) {
		d.fail(d.line(path), path, "%q is not allowed (allowed: %s)", s, strings.Join(f.enum, ", "))
		return false
	}
	for _, c := range f.checks {
		if !checks[c].ok(s) {
			d.fail(d.line(path), path, "%q is not a valid %s", s, checks[c].what)
			return false
		}
	}
	return true
}
