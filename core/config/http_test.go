package config

import (
	"strings"
	"testing"
)

// TestHTTPListen: the TCP listener is loopback unless allowed otherwise in
// so many words, and is written as an IP address and a port.
func TestHTTPListen(t *testing.T) {
	cases := []struct {
		name, src, wantErr string
	}{
		{"off by default", `log_level = "info"`, ""},
		{"ipv4 loopback", `http_listen = "127.0.0.1:8750"`, ""},
		{"ipv6 loopback", `http_listen = "[::1]:8750"`, ""},
		{"free port", `http_listen = "127.0.0.1:0"`, ""},
		{"all interfaces", `http_listen = "0.0.0.0:8750"`, "not a loopback address"},
		{"lan address", `http_listen = "192.168.1.5:8750"`, "not a loopback address"},
		{"remote allowed", "http_listen = \"0.0.0.0:8750\"\nhttp_listen_allow_remote = true", ""},
		{"a name", `http_listen = "localhost:8750"`, "must be an IP address"},
		{"no port", `http_listen = "127.0.0.1"`, "not host:port"},
		{"bad port", `http_listen = "127.0.0.1:99999"`, "port"},
		{"http_level", `http_level = "READ"`, ""},
		{"bad http_level", `http_level = "root"`, "http_level: must be one of none, read, admin"},
		{"bad host", `http_hosts = ["http://evil/"]`, "is not a host name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.src+"\n"), "/tmp/x/config.toml")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if cfg.HTTPLevel != "none" && cfg.HTTPLevel != "read" {
					t.Fatalf("http_level %q", cfg.HTTPLevel)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

// TestHTTPAdminTokenSecret: the token is a secret like the providers'.
func TestHTTPAdminTokenSecret(t *testing.T) {
	t.Setenv("SLUICE_TEST_TOKEN", "s3cret-token")
	cfg := mustParse(t, `http_admin_token = "env:SLUICE_TEST_TOKEN"`)
	if cfg.HTTPAdminToken.Value() != "s3cret-token" {
		t.Fatal("env: reference not resolved")
	}
	if _, err := Parse([]byte(`http_admin_token = "env:SLUICE_TEST_NO_SUCH_VAR"`), "/tmp/x/config.toml"); err == nil {
		t.Fatal("a missing env: reference loaded")
	}
	if !mustParse(t, `http_admin_token = "inline"`).InlineSecrets() {
		t.Fatal("an inline token does not count as an inline secret")
	}
}
