package binlog

import (
	"strings"
)

// queryKind is what a query event does to the transaction around it.
type queryKind int

const (
	queryStatement queryKind = iota // anything else: DDL, DCL, statement-logged DML
	queryBegin                      // BEGIN, START TRANSACTION
	queryCommit                     // COMMIT (ends the transaction)
	queryRollback                   // ROLLBACK (ends it; non-transactional changes stay)
	querySavepoint                  // SAVEPOINT, ROLLBACK TO, RELEASE SAVEPOINT
	queryXA                         // XA START, XA END, XA PREPARE (inside an XA group)
	queryXAEnd                      // XA COMMIT, XA ROLLBACK (end an XA group)
)

// classifyQuery tells transaction control apart from statements.
func classifyQuery(q string) queryKind {
	w := sqlWords(q, 3)
	if len(w) == 0 {
		return queryStatement
	}
	second := ""
	if len(w) > 1 {
		second = w[1]
	}
	switch w[0] {
	case "BEGIN":
		if second == "" || second == "WORK" {
			return queryBegin
		}
	case "START":
		if second == "TRANSACTION" {
			return queryBegin
		}
	case "COMMIT":
		return queryCommit
	case "ROLLBACK":
		if second == "TO" || (second == "WORK" && len(w) > 2 && w[2] == "TO") {
			return querySavepoint
		}
		return queryRollback
	case "SAVEPOINT":
		return querySavepoint
	case "RELEASE":
		if second == "SAVEPOINT" {
			return querySavepoint
		}
	case "XA":
		switch second {
		case "COMMIT", "ROLLBACK":
			return queryXAEnd
		case "START", "BEGIN", "END", "PREPARE":
			return queryXA
		}
	}
	return queryStatement
}

// certainFirst are the statements whose objects live in the default
// database unless the statement names another one.
var certainFirst = map[string]bool{
	"INSERT": true, "UPDATE": true, "DELETE": true, "REPLACE": true, "TRUNCATE": true,
	"CREATE": true, "ALTER": true, "DROP": true, "RENAME": true,
	"ANALYZE": true, "OPTIMIZE": true, "REPAIR": true,
}

// globalWords name objects outside any one schema, or a whole schema:
// a statement containing one of them is not attributed to its default
// database.
var globalWords = map[string]bool{
	"DATABASE": true, "DATABASES": true, "SCHEMA": true, "SCHEMAS": true,
	"USER": true, "ROLE": true, "GRANT": true, "REVOKE": true, "SERVER": true,
	"PLUGIN": true, "SONAME": true, "TABLESPACE": true, "LOGFILE": true,
	"EVENT": true, "PROCEDURE": true, "FUNCTION": true, "PACKAGE": true,
	"GLOBAL": true, "INSTANCE": true, "MASTER": true, "SLAVE": true, "REPLICA": true,
	"BINLOG": true, "FLUSH": true, "PASSWORD": true,
}

// statementInSchema reports whether a statement run with default database
// db certainly touches no other schema: db is set, the statement is one of
// a few kinds that act on objects of the default database, it qualifies
// no name with a schema (no "x.y" outside literals) and it mentions no
// global object. When in doubt it answers false.
func statementInSchema(db, q string) bool {
	if db == "" {
		return false
	}
	words, qualified := scanSQL(q, -1)
	if qualified || len(words) == 0 || !certainFirst[words[0]] {
		return false
	}
	for _, w := range words {
		if globalWords[w] {
			return false
		}
	}
	return true
}

// sqlWords returns the first n words of q (n < 0: all), upper-cased,
// skipping comments, literals and quoted identifiers.
func sqlWords(q string, n int) []string {
	w, _ := scanSQL(q, n)
	return w
}

// scanSQL walks a statement. It returns its bare words (upper-cased; at
// most n unless n < 0) and whether a dot joins two names (a schema- or
// table-qualified name). It skips '…' and "…" literals (also "…"
// identifiers under ANSI_QUOTES), `…` identifiers, -- and # comments and
// /* */ comments, but reads the contents of executable comments /*! */
// and /*M! */ as code.
func scanSQL(q string, n int) (words []string, qualified bool) {
	inExec := false
	// prevName: the last token was a name or quoted identifier/literal
	// (something a dot could qualify).
	prevName := false
	i := 0
	for i < len(q) && (n < 0 || len(words) < n) {
		c := q[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			i = skipQuoted(q, i)
			prevName = true
			continue
		case c == '#' || (c == '-' && strings.HasPrefix(q[i:], "--") && (i+2 == len(q) || isSpace(q[i+2]))):
			for i < len(q) && q[i] != '\n' {
				i++
			}
			prevName = false
			continue
		case c == '/' && strings.HasPrefix(q[i:], "/*"):
			if strings.HasPrefix(q[i:], "/*!") || strings.HasPrefix(q[i:], "/*M!") {
				i += 3
				if q[i-1] == 'M' {
					i++
				}
				for i < len(q) && q[i] >= '0' && q[i] <= '9' {
					i++
				}
				inExec = true
				prevName = false
				continue
			}
			end := strings.Index(q[i+2:], "*/")
			if end < 0 {
				return words, qualified
			}
			i += 2 + end + 2
			prevName = false
			continue
		case c == '*' && inExec && strings.HasPrefix(q[i:], "*/"):
			inExec = false
			i += 2
			prevName = false
			continue
		case isSpace(c):
			// "s2 . t" is a qualified name too: spaces keep prevName.
			i++
			continue
		case c == '.':
			// A dot between a name and a name (or quoted identifier) is a
			// qualifier; digits around it make it a number.
			next := byte(0)
			for j := i + 1; j < len(q); j++ {
				if !isSpace(q[j]) {
					next = q[j]
					break
				}
			}
			if prevName && (isWordByte(next) || next == '`' || next == '"' || next == '\'' || next == '*') {
				qualified = true
			}
			i++
			prevName = false
			continue
		case isWordByte(c):
			j := i
			for j < len(q) && isWordByte(q[j]) {
				j++
			}
			word := q[i:j]
			if word[0] >= '0' && word[0] <= '9' && isNumber(word) {
				// 1.5 is a number, not a qualified name: skip the fraction.
				if j < len(q) && q[j] == '.' {
					j++
					for j < len(q) && isWordByte(q[j]) {
						j++
					}
				}
				prevName = false
			} else {
				words = append(words, strings.ToUpper(word))
				prevName = true
			}
			i = j
			continue
		}
		prevName = false
		i++
	}
	return words, qualified
}

// skipQuoted returns the index after the quoted token starting at i. The
// quote is escaped by doubling it, or (outside `…`) by a backslash.
func skipQuoted(q string, i int) int {
	quote := q[i]
	i++
	for i < len(q) {
		switch {
		case q[i] == '\\' && quote != '`':
			i += 2
		case q[i] == quote:
			if i+1 < len(q) && q[i+1] == quote {
				i += 2
				continue
			}
			return i + 1
		default:
			i++
		}
	}
	return len(q)
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// isWordByte reports whether c can be part of an unquoted identifier
// (bytes >= 0x80 are parts of UTF-8 letters).
func isWordByte(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// isNumber reports whether w is a decimal number, possibly with an
// exponent (1e5). Identifiers may start with digits (1abc), numbers may not
// contain letters other than the exponent.
func isNumber(w string) bool {
	for i := 0; i < len(w); i++ {
		c := w[i]
		if c >= '0' && c <= '9' {
			continue
		}
		if (c == 'e' || c == 'E') && i > 0 && i+1 < len(w) {
			continue
		}
		return false
	}
	return true
}
