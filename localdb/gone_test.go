package localdb_test

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/quire-ha/quire/localdb"
)

// TestGone: a probe of an address nothing listens on (TCP port closed,
// socket file missing) is "gone"; a timeout or another error is not.
func TestGone(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	for name, dsn := range map[string]string{
		"closed port":    "u:p@tcp(" + closed + ")/",
		"missing socket": "u:p@unix(" + filepath.Join(t.TempDir(), "mysqld.sock") + ")/",
	} {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		_, err = localdb.Probe(context.Background(), db, time.Second)
		db.Close()
		if !localdb.Gone(err) {
			t.Errorf("%s: Gone(%v) = false, want true", name, err)
		}
	}
	for _, err := range []error{nil, context.DeadlineExceeded, errors.New("Error 1045: Access denied")} {
		if localdb.Gone(err) {
			t.Errorf("Gone(%v) = true, want false", err)
		}
	}
}
