package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RedisACL is a real redis-server (as StartRedis's: a Unix socket, no
// persistence, so a restart comes back empty) whose users come from an ACL
// file: one restricted user, from the rule the test gives, and the default
// user behind an admin password. A test talks to it as the restricted user
// only (URL), so every command the code sends is checked against the rule;
// the admin side reads what the server refused (ACLLog).
type RedisACL struct {
	t      testing.TB
	Dir    string
	Socket string
	// URL logs in as the rule's user: unix://user:password@/socket?db=0
	// (go-redis's ParseURL takes the user and password of a unix:// URL
	// as of a redis:// one).
	URL            string
	User, Password string
	admin          string // the default user's password
	aclFile, log   string
	cmd            *exec.Cmd
	done           chan struct{}
}

// StartRedisACL starts redis-server with rule (an ACL file line, "user NAME
// on >PASSWORD ...") as its one restricted user, or skips the test,
// printing why, where redis-server is not installed.
func StartRedisACL(t testing.TB, rule string) *RedisACL {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed (Debian package redis-server; .ci/run installs it): fleet tests skipped")
	}
	user, password, err := ruleLogin(rule)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "rda-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &RedisACL{t: t, Dir: dir, Socket: filepath.Join(dir, "redis.sock"), User: user, Password: password,
		admin: randomHex(), aclFile: filepath.Join(dir, "users.acl"), log: filepath.Join(dir, "redis.log")}
	r.URL = (&url.URL{Scheme: "unix", User: url.UserPassword(user, password), Path: r.Socket, RawQuery: "db=0"}).String()
	// The default user keeps every right (the admin side needs ACL LOG),
	// but only behind a password, so nothing reaches the server as it by
	// accident: an unauthenticated command is refused, not run.
	acl := "user default on >" + r.admin + " ~* &* +@all\n" + rule + "\n"
	if err := os.WriteFile(r.aclFile, []byte(acl), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(r.Kill)
	return r
}

// ruleLogin reads the user name and the (first) password of an ACL file
// line.
func ruleLogin(rule string) (user, password string, err error) {
	f := strings.Fields(rule)
	if len(f) < 2 || f[0] != "user" {
		return "", "", fmt.Errorf("testenv: ACL rule %q does not start with \"user NAME\"", rule)
	}
	for _, w := range f[2:] {
		if p, ok := strings.CutPrefix(w, ">"); ok {
			return f[1], p, nil
		}
	}
	return "", "", fmt.Errorf("testenv: ACL rule for %q sets no password (>PASSWORD)", f[1])
}

func randomHex() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Start starts (or restarts, empty) the server with the ACL file and waits
// until the admin can PING it. A server that exits at once (an ACL file
// it refuses: an unknown command in the rule, say) fails the test with its
// log, rather than a timeout.
func (r *RedisACL) Start() {
	r.t.Helper()
	cmd := exec.Command("redis-server", "--port", "0", "--unixsocket", r.Socket, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", r.Dir, "--aclfile", r.aclFile, "--logfile", r.log)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func(c *exec.Cmd, ch chan struct{}) { _ = c.Wait(); close(ch) }(cmd, r.done)
	Eventually(r.t, 30*time.Second, "redis-server (with an ACL file) to answer PING", func() bool {
		select {
		case <-r.done:
			b, _ := os.ReadFile(r.log)
			r.cmd = nil
			r.t.Fatalf("redis-server exited at start:\n%s", lastLines(string(b), 5))
		default:
		}
		got, err := commandAuth("unix", r.Socket, r.admin, "PING")
		return err == nil && got == "+PONG\r\n"
	})
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// Kill SIGKILLs the server (a crash: it comes back empty at Start).
func (r *RedisACL) Kill() {
	if r.cmd != nil {
		killServer(r.cmd, r.done, r.Socket)
		r.cmd = nil
	}
}

// ACLLogEntry is one entry of ACL LOG: what the server refused, and why.
type ACLLogEntry struct {
	Count    int64
	Reason   string // "command", "key", "channel" or "auth"
	Context  string // "toplevel", "multi", "lua"
	Object   string // the command, key or channel refused
	Username string
}

func (e ACLLogEntry) String() string {
	return fmt.Sprintf("%s %s refused to %s (%s, %d×)", e.Reason, e.Object, e.Username, e.Context, e.Count)
}

// ACLLog reads ACL LOG as the admin: every command, key and channel the
// server refused since it (re)started, and every failed login.
func (r *RedisACL) ACLLog() []ACLLogEntry {
	r.t.Helper()
	v, err := r.Admin("ACL", "LOG")
	if err != nil {
		r.t.Fatalf("ACL LOG: %v", err)
	}
	entries, ok := v.([]any)
	if !ok {
		r.t.Fatalf("ACL LOG answered %#v", v)
	}
	var out []ACLLogEntry
	for _, e := range entries {
		kv, _ := e.([]any)
		var le ACLLogEntry
		for i := 0; i+1 < len(kv); i += 2 {
			k, _ := kv[i].(string)
			switch k {
			case "count":
				le.Count, _ = kv[i+1].(int64)
			case "reason":
				le.Reason, _ = kv[i+1].(string)
			case "context":
				le.Context, _ = kv[i+1].(string)
			case "object":
				le.Object, _ = kv[i+1].(string)
			case "username":
				le.Username, _ = kv[i+1].(string)
			}
		}
		out = append(out, le)
	}
	return out
}

// Admin runs one command as the default user (with its password) and
// returns its RESP2 reply: a string, an int64, nil, a []any, or an error
// for an error reply. Arguments are sent as bulk strings, so they may
// hold spaces.
func (r *RedisACL) Admin(args ...string) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", r.Socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for _, cmd := range [][]string{{"AUTH", r.admin}, args} {
		var sb strings.Builder
		fmt.Fprintf(&sb, "*%d\r\n", len(cmd))
		for _, a := range cmd {
			fmt.Fprintf(&sb, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := c.Write([]byte(sb.String())); err != nil {
			return nil, err
		}
		v, err := readRESP(br)
		if err != nil {
			return nil, err
		}
		if e, ok := v.(error); ok {
			return nil, fmt.Errorf("%s: %w", cmd[0], e)
		}
		if cmd[0] != "AUTH" {
			return v, nil
		}
	}
	return nil, errors.New("not reached")
}

// readRESP reads one RESP2 reply; an error reply is returned as the value
// (an error), not as err, which is for the connection's failures.
func readRESP(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty RESP line")
	}
	switch body := line[1:]; line[0] {
	case '+':
		return body, nil
	case '-':
		return errors.New(body), nil
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err // $-1: nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		return string(b[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readRESP(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown RESP reply %q", line)
}
