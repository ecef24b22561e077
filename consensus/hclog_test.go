package consensus

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHclogAdapter(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := newHclog(logger, "raft")

	records := func() []map[string]any {
		var out []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if line == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("bad record %q: %v", line, err)
			}
			out = append(out, m)
		}
		buf.Reset()
		return out
	}

	h.Trace("dropped") // below the handler's level
	h.Debug("d", "k", 1)
	h.Named("transport").With("peer", "m2").Warn("w", "err", "boom")
	h.Error("e")
	got := records()
	want := []struct{ level, msg, logger string }{
		{"DEBUG", "d", "raft"},
		{"WARN", "w", "raft.transport"},
		{"ERROR", "e", "raft"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i]["level"] != w.level || got[i]["msg"] != w.msg || got[i]["logger"] != w.logger {
			t.Errorf("record %d = %v, want %+v", i, got[i], w)
		}
	}
	if got[0]["k"] != float64(1) || got[1]["peer"] != "m2" || got[1]["err"] != "boom" {
		t.Errorf("attributes lost: %v", got)
	}

	if h.IsTrace() || !h.IsDebug() || !h.IsError() {
		t.Errorf("IsTrace=%v IsDebug=%v IsError=%v", h.IsTrace(), h.IsDebug(), h.IsError())
	}
	if h.GetLevel() != hclog.Debug {
		t.Errorf("GetLevel = %v, want Debug", h.GetLevel())
	}
	h.SetLevel(hclog.Warn)
	h.Info("dropped by SetLevel")
	if h.IsInfo() || len(records()) != 0 {
		t.Error("SetLevel(Warn) did not drop Info")
	}
	h.SetLevel(hclog.NoLevel)

	std := h.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	std.Print("[WARN] from the standard logger")
	got = records()
	if len(got) != 1 || got[0]["level"] != "WARN" || got[0]["msg"] != "from the standard logger" {
		t.Errorf("standard logger record %v", got)
	}
}
