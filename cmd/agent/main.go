// Command quire-agent runs beside one mariadbd: it extracts the binlog on
// the primary, ships and stores the transaction log, and applies it on
// replicas.
//
//	quire-agent --config /etc/quire/agent.yaml
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/buildinfo"
	"github.com/quire-ha/quire/config"
)

func main() {
	path := flag.String("config", "/etc/quire/agent.yaml", "agent configuration file")
	check := flag.Bool("check", false, "check the configuration and exit")
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *version {
		fmt.Println("quire-agent", buildinfo.String())
		return
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "quire-agent: unexpected argument %q (passwords are never taken from the command line; see the config file's mysql.password_file)\n", flag.Arg(0))
		os.Exit(2)
	}
	cfg, err := config.LoadAgent(*path)
	if err == nil {
		err = cfg.CheckPlaintext() // TLS off only on loopback
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "quire-agent: configuration %s:\n%v\n", *path, err)
		os.Exit(2)
	}
	if cfg.MySQL.PasswordEnv != "" {
		os.Unsetenv(cfg.MySQL.PasswordEnv) // children and /proc/self/environ need not see it
	}
	if *check {
		fmt.Printf("%s: ok\n", *path)
		return
	}
	logger := cfg.Logger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := agent.New(cfg, logger)
	if err != nil {
		logger.Error("start failed", "err", err)
		os.Exit(1)
	}
	if err := a.Run(ctx); err != nil {
		logger.Error("agent stopped", "err", err)
		os.Exit(1)
	}
}
