package config

import (
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// docRow is one key of docs/configuration.md: the columns the code decides.
type docRow struct {
	key, typ, def, allowed string
}

// docAllowed overrides the "allowed" column where the rule lives in code
// rather than in a tag.
var docAllowed = map[string]string{
	"data_dir":                "path",
	"mysql.host":              "host name or IP",
	"mysql.socket":            "path",
	"mysql.user":              "any",
	"mysql.password_file":     "path, mode 0600 or stricter",
	"tls.ca_file":             "path",
	"tls.cert_file":           "path",
	"tls.key_file":            "path, mode 0600 or stricter",
	"apply.serialize_unknown": "true",
	"peers":                   "1, 3 or 5 entries",
}

var docCheckNames = map[string]string{
	"nodeid":   "node id",
	"listen":   "host:port",
	"hostport": "host:port",
	"envname":  "variable name",
	"ident":    "name",
}

// docRows lists the keys of struct value v (holding the defaults) as the
// documentation must show them.
func docRows(v reflect.Value, prefix string) []docRow {
	var rows []docRow
	for _, f := range fieldsOf(v.Type()) {
		key := join(prefix, f.name)
		fv := v.Field(f.index)
		ft := fv.Type()
		if ft.Kind() == reflect.Struct && ft != durationType {
			rows = append(rows, docRows(fv, key)...)
			continue
		}
		r := docRow{key: key}
		var allowed []string
		switch {
		case ft == durationType:
			r.typ, r.def = "duration", formatDuration(time.Duration(fv.Int()))
		case ft == byteSizeType:
			r.typ, r.def = "size", ByteSize(fv.Int()).String()
		case ft.Kind() == reflect.String:
			r.typ, r.def = "string", fv.String()
		case ft.Kind() == reflect.Int || ft.Kind() == reflect.Int64:
			r.typ, r.def = "integer", fmt.Sprint(fv.Int())
		case ft.Kind() == reflect.Bool:
			r.typ, r.def = "boolean", fmt.Sprint(fv.Bool())
			allowed = append(allowed, "true, false")
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			r.typ, r.def = "list of mappings", "[]"
			rows = append(rows, r) // allowed comes from docAllowed
			rows[len(rows)-1].allowed = docAllowed[key]
			rows[len(rows)-1].def = "required"
			rows = append(rows, docRows(reflect.New(ft.Elem()).Elem(), key+"[]")...)
			continue
		case ft.Kind() == reflect.Slice:
			r.typ, r.def = "list of strings", "[]"
		case ft.Kind() == reflect.Map:
			r.typ, r.def = "map of strings", "{}"
		default:
			panic("docRows: unexpected type " + ft.String())
		}
		if f.required && fv.IsZero() {
			r.def = "required"
		} else if r.def == "" {
			r.def = "none"
		}
		if f.hasRange {
			allowed = append(allowed, f.rangeText(ft))
		}
		if len(f.enum) > 0 {
			allowed = append(allowed, strings.Join(f.enum, ", "))
		}
		for _, c := range f.checks {
			allowed = append(allowed, docCheckNames[c])
		}
		if f.unique {
			allowed = append(allowed, "no duplicates")
		}
		if a, ok := docAllowed[key]; ok {
			allowed = []string{a}
		}
		if len(allowed) == 0 {
			allowed = []string{"any"}
		}
		r.allowed = strings.Join(allowed, "; ")
		rows = append(rows, r)
	}
	return rows
}

// docTables returns the rows of the markdown tables under the heading that
// starts with heading, keyed by key, with backticks removed.
func docTables(t *testing.T, doc, heading string) map[string]docRow {
	rows := map[string]docRow{}
	in := false
	for i, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.HasPrefix(line, heading)
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 6 {
			t.Errorf("docs/configuration.md:%d: want 5 columns: %s", i+1, line)
			continue
		}
		c := func(i int) string { return strings.TrimSpace(strings.ReplaceAll(cells[i], "`", "")) }
		r := docRow{key: c(1), typ: c(2), def: c(3), allowed: c(4)}
		if _, dup := rows[r.key]; dup {
			t.Errorf("docs/configuration.md:%d: %s documented twice", i+1, r.key)
		}
		rows[r.key] = r
	}
	return rows
}

// TestDocsMatchCode checks that docs/configuration.md documents every key
// of both files with the type, default and allowed values of the code, and
// no key that does not exist.
func TestDocsMatchCode(t *testing.T) {
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, tc := range []struct {
		heading string
		def     any
	}{
		{"## Agent", defaultAgent()},
		{"## Manager", defaultManager()},
	} {
		t.Run(strings.TrimPrefix(tc.heading, "## "), func(t *testing.T) { checkDocSection(t, doc, tc.heading, tc.def) })
	}
}

// checkDocSection compares the tables under heading with the keys of def, a
// pointer to the default configuration.
func checkDocSection(t *testing.T, doc, heading string, def any) {
	want := docRows(reflect.ValueOf(def).Elem(), "")
	got := docTables(t, doc, heading)
	var table strings.Builder
	for _, r := range want {
		fmt.Fprintf(&table, "| `%s` | %s | %s | %s | |\n", r.key, r.typ, r.def, r.allowed)
		g, ok := got[r.key]
		switch {
		case !ok:
			t.Errorf("key %s is not documented", r.key)
		case g != r:
			t.Errorf("key %s documented as\n\t%+v\nwant\t%+v", r.key, g, r)
		}
		delete(got, r.key)
	}
	var stale []string
	for k := range got {
		stale = append(stale, k)
	}
	sort.Strings(stale)
	for _, k := range stale {
		t.Errorf("documented key %s does not exist", k)
	}
	if t.Failed() {
		t.Logf("the code's table (descriptions left empty):\n%s", table.String())
	}
}
