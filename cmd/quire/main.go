// Command quire is the operator's command-line tool for a Quire cluster.
//
//	quire version
//	quire certs init  --dir DIR
//	quire certs issue --dir DIR --role operator|manager|agent --name NAME [--hosts HOST[,HOST...]]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/quire-ha/quire/buildinfo"
	"github.com/quire-ha/quire/certs"
)

// errUsage marks errors that should be followed by the usage text.
var errUsage = errors.New("usage")

const usage = `quire — operate a Quire cluster

Usage:
  quire version
  quire certs init  --dir DIR [--cn NAME]             create a CA for mutual TLS
  quire certs issue --dir DIR --role ROLE --name NAME [--hosts H,…] [--if-missing]
                                                      issue a certificate for a role: operator (the
                                                      CLI; no hosts), manager or agent (--hosts: the
                                                      names and IPs it is reached at)
  quire certs revoke (--serial HEX | --cert FILE) [--name N] [--reason R]
                                                      the managers revoke a certificate: every
                                                      manager and agent refuses it from then on
  quire certs revoked                                 the revocation list
  quire log dump    --dir DIR [--from N] [--to N] [--json]
                                                      print transaction-log records
  quire channels    --agent H:P [--json]              a replica agent's applier channels (its /status)
  quire channels    --agent GRPC_H:P --set-count N [--json] [--timeout D (default 5m)]
                    [--tls-ca F --tls-cert F --tls-key F | --insecure]
                                                      drain a replica's channels to one seqno and
                                                      switch its applier to N channels

Cluster commands (talk to any manager):
  quire status [--watch D]                            cluster state and every node's positions
                                                      (--watch: again every D until interrupted)
  quire members [list]                                list the members
  quire members add --id ID --mysql H:P --agent H:P [--manager H:P] [--priority N] [--no-primary]
  quire members update --id ID [--mysql H:P] [--agent H:P] [--manager H:P] [--priority N]
                    [--no-primary|--may-be-primary]
  quire members remove --id ID
  quire init --primary ID [--sync-set ID,...]         start epoch 1 with the first primary
  quire set-k N                                       sync-set members that must hold a commit
  quire set-policy strict|degrade                     what happens with fewer than K healthy
  quire set-sync-set ID,...                           replace the sync set ("" for none)
  quire set-settings [--failover-timeout D] [--anti-flap-window D]
  quire ack-failover [--by NAME]                      lift the anti-flapping block
  quire history                                       the failover decision log and the epochs
                                                      with their failover certificates
  Flags of every cluster command:
    --config F  (env QUIRE_CONFIG; default ~/.config/quire/cli.yaml: managers, tls {ca, cert, key})
    --managers H:P,...  (env QUIRE_MANAGERS)   --json   --timeout D (default 15s)
    --tls-ca F --tls-cert F --tls-key F  (env QUIRE_TLS_CA, QUIRE_TLS_CERT, QUIRE_TLS_KEY)  or  --insecure
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "quire:", err)
		if errors.Is(err, errUsage) {
			fmt.Fprint(os.Stderr, "\n"+usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("no command given: %w", errUsage)
	}
	switch args[0] {
	case "version", "--version":
		fmt.Fprintln(stdout, "quire", buildinfo.String())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "certs":
		return runCerts(args[1:], stdout, stderr)
	case "log":
		return runLog(args[1:], stdout, stderr)
	case "status":
		return runStatus(args[1:], stdout, stderr)
	case "channels":
		return runChannels(args[1:], stdout, stderr)
	case "members":
		return runMembers(args[1:], stdout, stderr)
	case "init":
		return runInit(args[1:], stdout, stderr)
	case "set-k":
		return runSetK(args[1:], stdout, stderr)
	case "set-policy":
		return runSetPolicy(args[1:], stdout, stderr)
	case "set-sync-set":
		return runSetSyncSet(args[1:], stdout, stderr)
	case "set-settings":
		return runSetSettings(args[1:], stdout, stderr)
	case "ack-failover":
		return runAckFailover(args[1:], stdout, stderr)
	case "history":
		return runHistory(args[1:], stdout, stderr)
	}
	return fmt.Errorf("unknown command %q: %w", args[0], errUsage)
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s: %v: %w", fs.Name(), err, errUsage)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q: %w", fs.Name(), fs.Arg(0), errUsage)
	}
	return nil
}

func runCerts(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("certs: say init, issue, revoke or revoked: %w", errUsage)
	}
	switch args[0] {
	case "init":
		fs := newFlags("certs init", stderr)
		dir := fs.String("dir", "", "directory for the CA (created, mode 0700)")
		cn := fs.String("cn", "Quire cluster CA", "common name of the CA")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		if *dir == "" {
			return fmt.Errorf("certs init: --dir is required: %w", errUsage)
		}
		if err := certs.InitCA(*dir, *cn); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "CA written to %s (%s, %s)\n", *dir, certs.CACert, certs.CAKey)
		return nil
	case "issue":
		fs := newFlags("certs issue", stderr)
		dir := fs.String("dir", "", "directory holding the CA")
		out := fs.String("out", "", "directory for the node's files (default: --dir)")
		name := fs.String("name", "", "node or operator name: a manager's or agent's must equal its node_id (becomes the CN and the name in the quire:// URI SAN)")
		roleName := fs.String("role", "", "what the holder may do: operator, manager or agent")
		hosts := fs.String("hosts", "", "comma-separated host names and IP addresses the node is reached at (managers and agents)")
		ifMissing := fs.Bool("if-missing", false, "keep an existing NAME.crt that already carries this role and name (a certificate issued before roles existed is issued again)")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		if *dir == "" || *name == "" || *roleName == "" {
			return fmt.Errorf("certs issue: --dir, --role and --name are required: %w", errUsage)
		}
		role, err := certs.ParseRole(*roleName)
		if err != nil {
			return fmt.Errorf("certs issue: --role: %v: %w", err, errUsage)
		}
		if *out == "" {
			*out = *dir
		}
		var hs []string
		for _, h := range strings.Split(*hosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hs = append(hs, h)
			}
		}
		if *ifMissing && certs.Holds(*out, *name, role) {
			fmt.Fprintf(stdout, "kept the %s certificate of %s in %s\n", role, *name, certs.CertFile(*out, *name))
			return nil
		}
		if err := certs.Issue(*dir, *out, *name, role, hs); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s certificate for %s written to %s and %s\n", role, *name, certs.CertFile(*out, *name), certs.KeyFile(*out, *name))
		return nil
	case "revoke":
		return runCertsRevoke(args[1:], stdout, stderr)
	case "revoked":
		return runCertsRevoked(args[1:], stdout, stderr)
	}
	return fmt.Errorf("certs: unknown subcommand %q: %w", args[0], errUsage)
}
