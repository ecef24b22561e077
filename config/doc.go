// Package config loads and validates the YAML configuration files of the
// Quire agent (cmd/agent) and manager (cmd/manager).
//
// Loading is strict: an unknown key, a value of the wrong type or out of
// range, a duplicate key, an empty file or a file with several YAML documents
// is an error that names the file, the line, the full key path, the bad value
// and what is allowed, for example
//
//	agent.yaml:7: apply.channels: 0 is out of range (allowed 1..256)
//	agent.yaml:3: unknown key "replicaton" (allowed: node_id, listen, ...)
//
// Every problem found is reported, not just the first: the error returned by
// [LoadAgent] and [LoadManager] joins one [*Error] per problem (see
// [errors.Join]), ordered by line.
//
// Passwords never come from the configuration file or the command line: the
// file names a password file (mode 0600 or stricter) or an environment
// variable, and the password is held in a [Secret], which prints, marshals and
// logs as "[redacted]".
//
// Relative paths in a file (data_dir, TLS files, password_file, socket) are
// resolved against the directory that holds the file.
package config
