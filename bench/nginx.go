package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/bench/loadgen"
	"github.com/sluice-dev/sluice/plugins/ineo/ineosim"
)

// findNginx returns the nginx binary, installing Debian's package when it is
// missing and the bench runs as root. On failure it returns a reason to
// print instead of the nginx row. Debian's maintainer scripts do not start
// the system service here (policy-rc.d, or no init system: invoke-rc.d
// blocks), so installing leaves no nginx running; the bench starts its own.
func (e *env) findNginx(ctx context.Context) (string, string) {
	lookup := func() string {
		if p, err := exec.LookPath("nginx"); err == nil {
			return p
		}
		if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
			return "/usr/sbin/nginx"
		}
		return ""
	}
	if p := lookup(); p != "" {
		return p, ""
	}
	if os.Geteuid() != 0 {
		return "", "nginx is not installed and the bench is not root (apt-get install -y nginx-light)"
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", "nginx is not installed and there is no apt-get"
	}
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	apt := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %w: %s", strings.Join(args, " "), err, lastLine(string(out)))
		}
		return nil
	}
	e.logf("nginx not found; installing Debian's nginx-light")
	err := apt("install", "-y", "-q", "nginx-light")
	if err != nil {
		// A machine that never ran apt-get update has no package lists.
		e.logf("%v; running apt-get update and retrying", err)
		if uerr := apt("update", "-q"); uerr != nil {
			return "", uerr.Error()
		}
		err = apt("install", "-y", "-q", "nginx-light")
		if err != nil {
			err = apt("install", "-y", "-q", "nginx")
		}
	}
	if err != nil {
		return "", err.Error()
	}
	if p := lookup(); p != "" {
		return p, ""
	}
	return "", "apt-get installed nginx but no nginx binary was found"
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// nginxConf fronts the iNeo simulator with proxy_cache, the way a user might
// put a caching reverse proxy in front of the API instead of sluice: the
// same request path, the credential added by the proxy, answers cached for
// 10 minutes. Everything nginx writes stays in dir; no system file is read
// or written.
//
// tcpAddr, when set, is a loopback TCP address nginx listens on as well,
// for row 1's TCP variant. eq, when set, adds the second server described
// at nginxEq.
func nginxConf(dir, simURL, tcpAddr string, eq *nginxEq) (string, error) {
	u, err := url.Parse(simURL)
	if err != nil {
		return "", err
	}
	user := ""
	if os.Geteuid() == 0 {
		// Workers would otherwise run as nobody and could not write the
		// cache into the bench's 0700 temp dir.
		user = "user root;"
	}
	tcpListen := ""
	if tcpAddr != "" {
		tcpListen = "listen " + tcpAddr + ";"
	}
	// The location both servers share: the same upstream, cache zone and
	// key, so a request to either warms the other's hits.
	location := fmt.Sprintf(`location = /v1/ineo/spotify.php {
            proxy_pass http://%s%s/spotify.php?trackId=$arg_trackId&accessKey=%s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache sluice;
            proxy_cache_key $arg_trackId;
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
            add_header Cache-Status "nginx; $upstream_cache_status";
`, u.Host, u.Path, url.QueryEscape(ineosim.DefaultAccessKey))
	eqServer := ""
	if eq != nil {
		var b strings.Builder
		fmt.Fprintf(&b, "    server {\n        listen unix:%s/nginx-eq.sock;\n", dir)
		if eq.tcp != "" {
			fmt.Fprintf(&b, "        listen %s;\n", eq.tcp)
		}
		b.WriteString("        " + location)
		for _, f := range eq.fields {
			fmt.Fprintf(&b, "            add_header %s '%s';\n", f[0], f[1])
		}
		b.WriteString("        }\n    }\n")
		eqServer = b.String()
	}
	return fmt.Sprintf(`daemon off;
master_process on;
%s
worker_processes auto;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy_temp;
    fastcgi_temp_path %[2]s/fastcgi_temp;
    uwsgi_temp_path %[2]s/uwsgi_temp;
    scgi_temp_path %[2]s/scgi_temp;
    proxy_cache_path %[2]s/cache levels=1:2 keys_zone=sluice:10m max_size=256m inactive=10m use_temp_path=off;
    # Go's server never closes a keep-alive connection after N requests;
    # nginx's default (1000) would make its clients re-dial mid-run.
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    server {
        listen unix:%[2]s/nginx.sock;
        %[3]s
        %[4]s        }
    }
%[5]s}
`, user, dir, tcpListen, location, eqServer), nil
}

// nginxEq is a second nginx server for a diagnostic of row 1: the same
// cached answer with as many header lines as sluiced's hit. nginx answers
// a hit with 6 header lines, sluiced with 11 (ETag, RateLimit-Policy,
// RateLimit, Age, Sluice-Request-Id and iNeo's status in two more); the
// net/http client's CPU per answer grows with every line (a key and a
// value string each, and past 8 a larger map), and at 16 and 64 clients
// that client, not the server, sets the pace. The fields added are
// sluiced's own, with its values, so the two answers differ in server and
// not in what the client parses.
type nginxEq struct {
	// fields are the (name, value) pairs added to nginx's answer.
	fields [][2]string
	// tcp is its loopback TCP address ("" for none).
	tcp string
}

// eqFields picks the header fields of sluiced's hit h that nginx's answer
// lacks (it sends Date, Content-Type, Content-Length and Cache-Status
// itself), as many as make the two answers' header lines equal in number:
// nginx also sends Server and Connection, so two of sluiced's fields are
// left out, ETag and Sluice-Request-Id. Values with a quote nginx's config
// cannot hold are left out too.
func eqFields(h http.Header) [][2]string {
	own := map[string]bool{"Date": true, "Content-Type": true, "Content-Length": true, "Cache-Status": true,
		"Etag": true, "Sluice-Request-Id": true}
	var out [][2]string
	for name, vs := range h {
		if own[name] || len(vs) != 1 || strings.ContainsAny(vs[0], "'\\") {
			continue
		}
		out = append(out, [2]string{name, vs[0]})
	}
	slices.SortFunc(out, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return out
}

// nginxServer is a running nginx with a warm cache entry for path.
type nginxServer struct {
	p      *proc
	socket string
	tcp    string // loopback TCP address, "" if none
	// eqSocket and eqTCP are the nginxEq server's ("" if none).
	eqSocket, eqTCP string
	client          *http.Client
	version         string
}

// startNginx starts nginx in dir and warms its cache with one request for
// warmPath; it returns once a second request is a cache HIT. With tcpAddr
// set it listens there too, serving the same cache.
func (e *env) startNginx(ctx context.Context, bin, simURL, warmPath, tcpAddr string, eq *nginxEq) (*nginxServer, error) {
	dir := filepath.Join(e.tmp, "nginx")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	conf, err := nginxConf(dir, simURL, tcpAddr, eq)
	if err != nil {
		return nil, err
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	version := ""
	if out, err := exec.Command(bin, "-v").CombinedOutput(); err == nil {
		version = strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
	}
	// -e points the start-up error log into dir too (nginx ≥ 1.19.5).
	p, err := e.startProc("nginx", syscall.SIGQUIT, filepath.Join(dir, "stderr.log"),
		bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath)
	if err != nil {
		return nil, err
	}
	n := &nginxServer{p: p, socket: filepath.Join(dir, "nginx.sock"), tcp: tcpAddr, version: version}
	if eq != nil {
		n.eqSocket, n.eqTCP = filepath.Join(dir, "nginx-eq.sock"), eq.tcp
	}
	n.client = loadgen.UnixClient(n.socket, 64)
	// The first request is the miss that fills the cache.
	if err := waitAnswer(ctx, n.client, "http://nginx"+warmPath, p, 10*time.Second, nil); err != nil {
		p.stop()
		return nil, fmt.Errorf("%w\n%s", err, tail(filepath.Join(dir, "error.log"), 1000))
	}
	if err := waitAnswer(ctx, n.client, "http://nginx"+warmPath, p, 5*time.Second, nginxHit); err != nil {
		p.stop()
		return nil, fmt.Errorf("nginx never served a cache hit: %w", err)
	}
	if n.eqSocket != "" {
		ec := loadgen.UnixClient(n.eqSocket, 1)
		defer ec.CloseIdleConnections()
		if err := waitAnswer(ctx, ec, "http://nginx"+warmPath, p, 5*time.Second, nginxHit); err != nil {
			p.stop()
			return nil, fmt.Errorf("nginx's second server never served a cache hit: %w", err)
		}
	}
	return n, nil
}

func nginxHit(resp *http.Response, _ []byte) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if cs := resp.Header.Get("Cache-Status"); cs != "nginx; HIT" {
		return fmt.Errorf("Cache-Status %q, want a HIT", cs)
	}
	return nil
}
