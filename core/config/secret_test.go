package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const secretValue = "s3cr3t-V4LUE"

// TestSecretNeverRendered renders a config holding secrets in every way a
// program might print or serialise it and checks the value never appears.
func TestSecretNeverRendered(t *testing.T) {
	t.Setenv("SLUICE_T_SPOTIFY_ID", secretValue)
	src := fmt.Sprintf(`
[providers.ineo]
access_key = %[1]q
tmanage_auth = %[1]q
[providers.hellorf]
enabled = true
base_url = "https://h.example.com"
client_id = %[1]q
client_secret = %[1]q
[providers.spotify]
enabled = true
client_id = "env:SLUICE_T_SPOTIFY_ID"
client_secret = %[1]q
`, secretValue)
	cfg := mustParse(t, src)
	if cfg.Providers.Spotify.ClientID.Value() != secretValue || cfg.Providers.Ineo.AccessKey.Value() != secretValue {
		t.Fatal("secrets not loaded; the test would prove nothing")
	}
	s := cfg.Providers.Ineo.AccessKey

	renderings := map[string]func() string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		renderings["cfg "+verb] = func() string { return fmt.Sprintf(verb, cfg) }
		renderings["*cfg "+verb] = func() string { return fmt.Sprintf(verb, *cfg) }
		renderings["providers "+verb] = func() string { return fmt.Sprintf(verb, cfg.Providers) }
		renderings["secret "+verb] = func() string { return fmt.Sprintf(verb, s) }
		renderings["&secret "+verb] = func() string { return fmt.Sprintf(verb, &s) }
	}
	renderings["json"] = func() string {
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	renderings["toml"] = func() string {
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(cfg); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	for _, h := range []string{"text", "json"} {
		renderings["slog "+h] = func() string {
			var buf bytes.Buffer
			var handler slog.Handler = slog.NewTextHandler(&buf, nil)
			if h == "json" {
				handler = slog.NewJSONHandler(&buf, nil)
			}
			slog.New(handler).Info("cfg", "cfg", cfg, "secret", s, "providers", cfg.Providers)
			return buf.String()
		}
	}
	for name, render := range renderings {
		out := render()
		if strings.Contains(out, secretValue) {
			t.Errorf("%s shows the secret: %s", name, out)
		}
	}
	if !strings.Contains(renderings["json"](), redacted) {
		t.Error("JSON should show the secret as " + redacted)
	}
	if s.String() != redacted || s.GoString() != redacted {
		t.Error("String/GoString must be " + redacted)
	}
}

// TestSecretNotInErrors makes load errors on secret lines and checks the value
// is not in the message.
func TestSecretNotInErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		src    string
		secret string // what must not appear
	}{
		{"unquoted", "[providers.ineo]\naccess_key = " + secretValue + "\n", secretValue},
		{"unquoted starting like a boolean", "[providers.ineo]\ntmanage_auth = true" + secretValue + "\n", secretValue},
		{"unquoted number-like", "[providers.spotify]\nclient_secret = 1234" + secretValue + "\n", secretValue},
		{"unquoted numeric secret", "[providers.spotify]\nclient_id = 1_9876543210_\n", "9876543210"},
		{"unquoted float-like secret", "[providers.hellorf]\nclient_secret = 3.14159265.358979\n", "14159265"},
		{"unterminated", "[providers.ineo]\naccess_key = \"" + secretValue + "\n", secretValue},
		{"inline table", "[providers]\nineo = { access_key = true" + secretValue + " }\n", secretValue},
		{"bad escape", "[providers.hellorf]\nclient_id = \"" + secretValue + "\\u12zz\"\n", "12zz"},
		{"misspelt key, unquoted", "[providers.spotify]\nacces_key = 1_9876543210_\n", "9876543210"},
		{"misspelt key", "[providers.ineo]\nacess_key = \"" + secretValue + "\"\n", secretValue},
		{"bad reference", "[providers.ineo]\naccess_key = \"env:" + secretValue + "-x\"\n", secretValue},
		{"invalid elsewhere", "[providers.ineo]\naccess_key = \"" + secretValue + "\"\ntimeout = \"x\"\n", secretValue},
		{"swallowed by a multi-line duration", "[providers.ineo]\nlink_ttl = \"\"\"10m\naccess_key = \"" + secretValue + "\"\"\"\"\n", secretValue},
		// A long value is quoted only in part: no more than its start.
		{"token pasted into a duration", "[providers.ineo]\ntimeout = \"750394:b5d1ada54acf4185c1a114a526d0bf18\"\n", "b5d1ada5"},
		{"token pasted into a size", "[cache]\nmax_size = \"750394:b5d1ada54acf4185c1a114a526d0bf18\"\n", "b5d1ada5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), filepath.Join(dir, "config.toml"))
			if err == nil {
				t.Fatal("expected an error")
			}
			if strings.Contains(err.Error(), tt.secret) || strings.Contains(fmt.Sprintf("%+v", err), tt.secret) {
				t.Errorf("error shows the secret: %v", err)
			}
			if len(allErrors(err)) == 0 || allErrors(err)[0].Line != 2 && allErrors(err)[0].Line != 3 {
				t.Errorf("error not located: %v", err)
			}
		})
	}
}

func TestNewSecret(t *testing.T) {
	s := NewSecret("v")
	if s.Value() != "v" || !s.IsSet() || s.Source() != "inline" {
		t.Errorf("NewSecret: %q %v %q", s.Value(), s.IsSet(), s.Source())
	}
	if z := NewSecret(""); z.IsSet() || z.Source() != "" {
		t.Error("NewSecret(\"\") should be unset")
	}
}
