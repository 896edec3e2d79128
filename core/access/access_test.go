package access

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/sluice-dev/sluice/core/config"
)

func TestPolicyLevels(t *testing.T) {
	p := NewPolicy(config.Access{ReadUIDs: []uint32{1001}, AdminGIDs: []uint32{50}, AdminUIDs: []uint32{1002}}, 999, 40)
	cases := []struct {
		name string
		peer Peer
		want Level
	}{
		{"root", Peer{UID: 0, GID: 0}, Admin},
		{"daemon's own uid", Peer{UID: 999, GID: 999}, Admin},
		{"admin uid", Peer{UID: 1002, GID: 1002}, Admin},
		{"admin group (supplementary)", Peer{UID: 1003, GID: 1003, Groups: []uint32{7, 50}}, Admin},
		{"read uid", Peer{UID: 1001, GID: 1001}, Read},
		{"socket group (primary)", Peer{UID: 1004, GID: 40}, Read},
		{"socket group (supplementary)", Peer{UID: 1005, GID: 1005, Groups: []uint32{40}}, Read},
		{"stranger", Peer{UID: 1006, GID: 1006, Groups: []uint32{41}}, None},
	}
	for _, tc := range cases {
		if got := p.Level(tc.peer); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPeerOfReportsThisProcess(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("unix", sock)
		if err == nil {
			defer c.Close()
			buf := make([]byte, 1)
			c.Read(buf)
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := PeerOf(c)
	if err != nil {
		t.Fatal(err)
	}
	if int(p.PID) != os.Getpid() || int(p.UID) != os.Getuid() || int(p.GID) != os.Getgid() {
		t.Fatalf("peer %+v, want pid %d uid %d gid %d", p, os.Getpid(), os.Getuid(), os.Getgid())
	}
}
