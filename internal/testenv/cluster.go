package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// clusterSlots is Redis Cluster's fixed number of hash slots.
const clusterSlots = 16384

// Cluster is a Redis Cluster of three masters (no replicas) on loopback
// TCP, for fleet mode's cluster_addrs path: three, so that a test can put
// keys on different nodes and see that no script or pipeline spans two.
// Cluster nodes speak TCP only (they gossip addresses and ports).
type Cluster struct {
	t testing.TB
	// Addrs are the masters' host:port ([fleet] cluster_addrs).
	Addrs []string
	// first[i] is node i's first slot; it owns first[i] up to
	// first[i+1]-1 (the last node up to 16383).
	first []int
}

// StartCluster starts three cluster-enabled redis-servers, gives each a
// third of the slots, joins them and waits until every node calls the
// cluster ok and knows all three; or skips the test, printing why, where
// redis-server is not installed or is older than 7.0 (CLUSTER
// ADDSLOTSRANGE, cluster-port). The servers are stopped when the test
// ends.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed (Debian package redis-server; .ci/run installs it): Cluster tests skipped")
	}
	if v, ok := redisMajor(); !ok || v < 7 {
		t.Skip("redis-server older than 7.0 (or its version unreadable): Cluster tests need CLUSTER ADDSLOTSRANGE and cluster-port")
	}
	const nodes = 3
	dir := t.TempDir()
	c := &Cluster{t: t}
	bus := make([]int, nodes)
	for i := range nodes {
		var addr string
		addr, bus[i] = startClusterNode(t, dir, i)
		c.Addrs = append(c.Addrs, addr)
		c.first = append(c.first, i*clusterSlots/nodes)
	}
	for i, a := range c.Addrs {
		last := clusterSlots - 1
		if i+1 < nodes {
			last = c.first[i+1] - 1
		}
		if got, err := clusterCommand(a, fmt.Sprintf("CLUSTER ADDSLOTSRANGE %d %d", c.first[i], last)); err != nil || got != "OK" {
			t.Fatalf("CLUSTER ADDSLOTSRANGE on %s: %q, %v", a, got, err)
		}
	}
	// One node meets the others; gossip tells each about the rest.
	for i := 1; i < nodes; i++ {
		host, port, _ := net.SplitHostPort(c.Addrs[i])
		if got, err := clusterCommand(c.Addrs[0], fmt.Sprintf("CLUSTER MEET %s %s %d", host, port, bus[i])); err != nil || got != "OK" {
			t.Fatalf("CLUSTER MEET %s: %q, %v", c.Addrs[i], got, err)
		}
	}
	// Ready once every node sees every slot served (cluster_state:ok, so
	// it redirects rather than refuses) and knows all three nodes: a
	// client's CLUSTER SLOTS from any of them is then the whole map.
	for _, a := range c.Addrs {
		Eventually(t, 60*time.Second, a+" to report the cluster ok with 3 nodes", func() bool {
			info, err := clusterCommand(a, "CLUSTER INFO")
			return err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", nodes)) &&
				strings.Contains(info, fmt.Sprintf("cluster_slots_assigned:%d", clusterSlots))
		})
	}
	return c
}

// startClusterNode starts node i on two free ports (its clients' and its
// cluster bus's: the default bus port, port + 10000, may be taken, or past
// 65535 for an ephemeral port) and waits until it answers. A port free
// when chosen may be taken before the server binds it (by a test running
// alongside): a server that exits before answering is started again on
// other ports, up to three times.
func startClusterNode(t testing.TB, dir string, i int) (addr string, bus int) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port, bus := freePort(t), freePort(t)
		if port == bus {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		var out bytes.Buffer
		cmd := exec.Command("redis-server", "--port", fmt.Sprint(port), "--cluster-port", fmt.Sprint(bus),
			"--cluster-enabled", "yes", "--cluster-config-file", fmt.Sprintf("%s/nodes-%d-%d.conf", dir, i, attempt),
			"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		exited := false
		Eventually(t, 30*time.Second, addr+" to answer PING", func() bool {
			select {
			case <-done:
				exited = true
				return true
			default:
			}
			got, err := command("tcp", addr, "PING")
			return err == nil && strings.HasPrefix(got, "+PONG")
		})
		if !exited {
			t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
			return addr, bus
		}
		// out is complete: Wait has returned.
		if attempt == 3 {
			t.Fatalf("cluster node %d exited before answering, 3 times; last:\n%s", i, out.String())
		}
		t.Logf("cluster node %d exited before answering (a port taken meanwhile?), starting it again: %s", i, lastLine(out.String()))
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Node is the index in Addrs of the master that holds key (its slot, as
// CLUSTER KEYSLOT computes it, hash tags included).
func (c *Cluster) Node(key string) int {
	c.t.Helper()
	got, err := clusterCommand(c.Addrs[0], "CLUSTER KEYSLOT "+key)
	slot, perr := strconv.Atoi(got)
	if err != nil || perr != nil {
		c.t.Fatalf("CLUSTER KEYSLOT %s: %q, %v", key, got, err)
	}
	n := 0
	for i, f := range c.first {
		if slot >= f {
			n = i
		}
	}
	return n
}

// Command sends one inline command to node i (of Addrs) and returns its
// reply: a simple string, integer or bulk string as it is, an array's
// elements one a line; an error reply as an error.
func (c *Cluster) Command(i int, cmd string) (string, error) { return clusterCommand(c.Addrs[i], cmd) }

// redisMajor is the installed redis-server's major version.
func redisMajor() (int, bool) {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return 0, false
	}
	m := regexp.MustCompile(`v=(\d+)\.`).FindSubmatch(out)
	if m == nil {
		return 0, false
	}
	v, err := strconv.Atoi(string(m[1]))
	return v, err == nil
}

// clusterCommand is command for replies command does not read whole
// (CLUSTER INFO's bulk string, nested arrays): the full RESP reply.
func clusterCommand(addr, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "%s\r\n", cmd); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(conn))
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err // a nil bulk string: ""
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		parts := make([]string, 0, max(n, 0))
		for range n {
			p, err := readReply(r)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
