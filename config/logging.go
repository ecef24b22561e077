package config

import (
	"io"
	"log/slog"
)

// newLogger returns a logger writing to w at level ("debug", "info", "warn"
// or "error") in format ("text" or "json").
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Logger returns a logger writing to w with the configured level and format.
func (a *Agent) Logger(w io.Writer) *slog.Logger { return newLogger(w, a.LogLevel, a.LogFormat) }

// Logger returns a logger writing to w with the configured level and format.
func (m *Manager) Logger(w io.Writer) *slog.Logger { return newLogger(w, m.LogLevel, m.LogFormat) }
