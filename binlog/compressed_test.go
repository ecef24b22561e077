package binlog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/quire-ha/quire/internal/mariadbtest"
)

// TestCompressed checks that a source with log_bin_compress=ON is refused
// at connection time, and that compressed events written earlier are
// refused when they are read, both with an error naming the setting and
// the fix.
func TestCompressed(t *testing.T) {
	in := mariadbtest.Start(t, 1, mariadbtest.Options{Settings: []string{"log_bin_compress=ON", "log_bin_compress_min_len=10"}})[0]
	start := firstPosition(t, in)
	run(t, in, "", "CREATE DATABASE s1", "CREATE TABLE s1.t (id INT PRIMARY KEY, v VARCHAR(200))",
		"INSERT INTO s1.t VALUES (1, REPEAT('compress me ', 10))")
	cfg := testConfig(t, in, false)
	checkErr := func(err error) {
		t.Helper()
		if !errors.Is(err, ErrCompressed) {
			t.Fatalf("error %v, want ErrCompressed", err)
		}
		for _, s := range []string{"log_bin_compress", "SET GLOBAL log_bin_compress=OFF"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not mention %q", err, s)
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, cfg, Resume{Position: start})
	checkErr(err)
	t.Logf("with log_bin_compress=ON: %v", err)

	run(t, in, "", "SET GLOBAL log_bin_compress=OFF")
	src, err := Open(ctx, cfg, Resume{Position: start})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var recs int
	for {
		_, err = src.Next(ctx)
		if err != nil {
			break
		}
		recs++
	}
	checkErr(err)
	t.Logf("compressed event after %d records: %v", recs, err)
	if _, again := src.Next(ctx); !errors.Is(again, ErrCompressed) {
		t.Errorf("Next after the error returned %v, want the same error", again)
	}
}
