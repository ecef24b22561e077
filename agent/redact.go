package agent

import (
	"regexp"
	"slices"
)

// The agent's HTTP endpoints (/status, /replica) have no authentication:
// HAProxy and monitoring read them. They show no raw database error text,
// which can carry row data (a duplicate key's value), account names or
// schema details: a MySQL error keeps its number and SQLSTATE only. The
// full text is in the agent's log and, over mutual TLS, in the managers'
// view (`quire status`) and the AgentControl Status call.

// mysqlErrorRE matches the driver's "Error 1062 (23000): message…".
var mysqlErrorRE = regexp.MustCompile(`(Error \d+(?: \([0-9A-Z]{5}\))?):\s.*`)

// withheld replaces the message of a database error.
const withheld = "$1: [message withheld on this unauthenticated endpoint; see the agent's log]"

// redact removes raw database error text from s.
func redact(s string) string {
	return mysqlErrorRE.ReplaceAllString(s, withheld)
}

// redactStatus returns st with every error text redacted; st is not
// changed.
func redactStatus(st Status) Status {
	st.RoleError = redact(st.RoleError)
	if st.Apply == nil {
		return st
	}
	ap := *st.Apply
	ap.LastError = redact(ap.LastError)
	ap.Errors = slices.Clone(ap.Errors)
	for i := range ap.Errors {
		ap.Errors[i].Error = redact(ap.Errors[i].Error)
	}
	ap.Channels = slices.Clone(ap.Channels)
	for i := range ap.Channels {
		if s := ap.Channels[i].Stopped; s != nil {
			c := *s
			c.Error = redact(c.Error)
			ap.Channels[i].Stopped = &c
		}
	}
	st.Apply = &ap
	return st
}
