package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/quire-ha/quire/txlog"
)

// runLog implements `quire log dump`.
func runLog(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "dump" {
		return fmt.Errorf("log: say dump: %w", errUsage)
	}
	fs := newFlags("log dump", stderr)
	dir := fs.String("dir", "", "transaction-log directory (the agent's data_dir/txlog)")
	from := fs.Uint64("from", 0, "first seqno to print (default: the log's first)")
	to := fs.Uint64("to", 0, "last seqno to print (default: the log's last)")
	asJSON := fs.Bool("json", false, "one JSON object per record")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("log dump: --dir is required: %w", errUsage)
	}
	if *to != 0 && *from > *to {
		return fmt.Errorf("log dump: --from %d is after --to %d: %w", *from, *to, errUsage)
	}
	l, err := txlog.Open(*dir, txlog.Options{Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return fmt.Errorf("log dump: %w", err)
	}
	defer l.Close()
	return txlog.Dump(stdout, l, *from, *to, *asJSON)
}
