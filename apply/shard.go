package apply

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strings"

	"github.com/quire-ha/quire/txlog"
)

// ShardConfig is the operator's shard configuration (DESIGN.md §4). The
// zero value makes every schema a shard of its own.
type ShardConfig struct {
	// Schemas maps a schema to the shard it belongs to. A schema named
	// neither here nor in Groups is a shard of its own, named after it.
	Schemas map[string]string `yaml:"schemas"`
	// Groups maps a shard name to the schemas it holds (a shard group).
	Groups map[string][]string `yaml:"groups"`
	// Critical names shards that hold global data: every transaction that
	// touches one of them runs serialized.
	Critical []string `yaml:"critical"`
	// Channels pins shards to channels (0-based). Other shards go to the
	// channel HashChannel picks.
	Channels map[string]int `yaml:"channels"`
}

// ShardMap is a validated ShardConfig for a given number of channels.
// It is immutable and safe for concurrent use.
type ShardMap struct {
	shardOf  map[string]string
	critical map[string]bool
	pinned   map[string]int
	channels int
	layout   string
}

// NewShardMap validates cfg for n channels.
func NewShardMap(cfg ShardConfig, n int) (*ShardMap, error) {
	if n < 1 {
		return nil, fmt.Errorf("apply: shard map: %d channels, need at least 1", n)
	}
	m := &ShardMap{shardOf: map[string]string{}, critical: map[string]bool{}, pinned: map[string]int{}, channels: n}
	for schema, shard := range cfg.Schemas {
		if schema == "" || shard == "" {
			return nil, fmt.Errorf("apply: shard map: schemas: empty name in %q: %q", schema, shard)
		}
		m.shardOf[schema] = shard
	}
	for shard, schemas := range cfg.Groups {
		if shard == "" {
			return nil, fmt.Errorf("apply: shard map: groups: empty shard name")
		}
		for _, schema := range schemas {
			if schema == "" {
				return nil, fmt.Errorf("apply: shard map: groups: %s: empty schema name", shard)
			}
			if old, ok := m.shardOf[schema]; ok && old != shard {
				return nil, fmt.Errorf("apply: shard map: schema %s is in shard %s and in shard %s", schema, old, shard)
			}
			m.shardOf[schema] = shard
		}
	}
	for _, shard := range cfg.Critical {
		if shard == "" {
			return nil, fmt.Errorf("apply: shard map: critical: empty shard name")
		}
		m.critical[shard] = true
	}
	for shard, ch := range cfg.Channels {
		if shard == "" {
			return nil, fmt.Errorf("apply: shard map: channels: empty shard name")
		}
		if ch < 0 || ch >= n {
			return nil, fmt.Errorf("apply: shard map: channels: shard %s pinned to channel %d, but there are %d channels (0..%d)", shard, ch, n, n-1)
		}
		m.pinned[shard] = ch
	}
	m.layout = layoutOf(m)
	return m, nil
}

// layoutOf fingerprints everything that decides which channel applies a
// record. Restart rows are only valid for the layout that wrote them.
func layoutOf(m *ShardMap) string {
	var b strings.Builder
	fmt.Fprintf(&b, "channels=%d\n", m.channels)
	keys := make([]string, 0, len(m.shardOf))
	for k := range m.shardOf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "schema %q=%q\n", k, m.shardOf[k])
	}
	keys = keys[:0]
	for k := range m.pinned {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "pin %q=%d\n", k, m.pinned[k])
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:8])
}

// Channels returns the number of channels the map was built for.
func (m *ShardMap) Channels() int { return m.channels }

// Layout fingerprints the schema-to-channel assignment (16 hex digits).
func (m *ShardMap) Layout() string { return m.layout }

// Shard returns the shard a schema belongs to.
func (m *ShardMap) Shard(schema string) string {
	if s, ok := m.shardOf[schema]; ok {
		return s
	}
	return schema
}

// Critical reports whether shard is critical.
func (m *ShardMap) Critical(shard string) bool { return m.critical[shard] }

// Channel returns the channel that applies shard: the pinned one, or
// HashChannel.
func (m *ShardMap) Channel(shard string) int {
	if ch, ok := m.pinned[shard]; ok {
		return ch
	}
	return HashChannel(shard, m.channels)
}

// HashChannel places a shard on one of n channels: FNV-1a (32 bit) of the
// shard name, modulo n. It never changes for a given name and n.
func HashChannel(shard string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(shard))
	return int(h.Sum32() % uint32(n))
}

// Reasons Classify gives for serializing a record. They are stable and used
// as metric labels.
const (
	ReasonDDL              = "ddl"
	ReasonMultiShard       = "multi-shard"
	ReasonUnknownSchema    = "unknown-schema"
	ReasonNoSchema         = "no-schema"
	ReasonCritical         = "critical-shard"
	ReasonNonTransactional = "non-transactional"
	ReasonStatement        = "statement-event"
	ReasonInconsistent     = "inconsistent"
	ReasonUninspectable    = "uninspectable"
)

// Classify decides how a record is applied. A record runs on the channel of
// its shard unless it must be serialized: run alone, after every earlier
// record has committed and before any later one starts. It serializes when
// the record is DDL, touches several shards, an unknown or no schema, a
// critical shard, is not one transactional event group, carries statement
// events, or when its flags and events disagree: when unsure, serialize.
//
// shard is the record's single shard, or "" when there is none.
func Classify(rec *txlog.Record, m *ShardMap) (shard string, serialize bool, reason string) {
	if rec.Flags&txlog.FlagDDL != 0 {
		return "", true, ReasonDDL
	}
	if rec.Flags&txlog.FlagUnknownSchema != 0 {
		return "", true, ReasonUnknownSchema
	}
	if len(rec.Schemas) == 0 {
		return "", true, ReasonNoSchema
	}
	if rec.Flags&txlog.FlagMultiSchema != 0 && len(rec.Schemas) < 2 {
		return "", true, ReasonInconsistent
	}
	for i, s := range rec.Schemas {
		if s == "" {
			return "", true, ReasonUnknownSchema
		}
		if sh := m.Shard(s); i == 0 {
			shard = sh
		} else if sh != shard {
			return "", true, ReasonMultiShard
		}
	}
	if m.Critical(shard) {
		return shard, true, ReasonCritical
	}
	sum, err := summarize(rec.FormatDesc, rec.Events)
	if err != nil {
		return shard, true, ReasonUninspectable
	}
	switch {
	case sum.gtid.flags&gtidDDL != 0:
		return shard, true, ReasonDDL
	case sum.gtid.flags&gtidTransactional == 0, sum.gtid.flags&gtidStandalone != 0:
		return shard, true, ReasonNonTransactional
	case sum.statements > 0:
		return shard, true, ReasonStatement
	case !sum.committed:
		return shard, true, ReasonInconsistent
	}
	for _, s := range sum.tables {
		if !slices.Contains(rec.Schemas, s) {
			return shard, true, ReasonInconsistent
		}
	}
	return shard, false, ""
}
