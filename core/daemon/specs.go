package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/sluice-dev/sluice/core/config"
	"github.com/sluice-dev/sluice/core/pluginhost"
	"github.com/sluice-dev/sluice/core/scheduler"
)

// providerSpecs turns each enabled provider section into a plugin spec. The
// section goes to the plugin as JSON with secrets resolved (over RPC, never
// the environment); `limits` go to the scheduler instead, so changing them
// needs no plugin restart.
func providerSpecs(cfg *config.Config) ([]pluginhost.Spec, error) {
	dir := cfg.PluginDir
	if dir == "" {
		var err error
		if dir, err = defaultPluginDir(); err != nil {
			return nil, err
		}
	}
	var specs []pluginhost.Spec
	pv := reflect.ValueOf(cfg.Providers)
	pt := pv.Type()
	for i := range pt.NumField() {
		name := tomlName(pt.Field(i))
		section := pv.Field(i)
		if !section.FieldByName("Enabled").Bool() {
			continue
		}
		spec := pluginhost.Spec{Name: name, Path: filepath.Join(dir, "sluice-"+name), Limits: map[string]scheduler.Limit{},
			StateDir: filepath.Join(cfg.StateDir, "plugins", name)}
		settings := map[string]any{}
		st := section.Type()
		for j := range st.NumField() {
			key, v := tomlName(st.Field(j)), section.Field(j)
			switch key {
			case "enabled":
			case "plugin_sha256":
				spec.SHA256 = strings.ToLower(v.String())
			case "limits":
				for k := range v.NumField() {
					if l, ok := v.Field(k).Interface().(*config.Limit); ok && l != nil {
						spec.Limits[name+"."+tomlName(v.Type().Field(k))] = scheduler.Limit{Requests: l.Requests, Window: l.Window.Duration}
					}
				}
			default:
				settings[key] = plain(v.Interface())
			}
		}
		b, err := json.Marshal(settings)
		if err != nil {
			return nil, fmt.Errorf("provider %s settings: %w", name, err)
		}
		spec.ConfigJSON = b
		specs = append(specs, spec)
	}
	return specs, nil
}

// plain renders config values for the plugin: secrets as their value,
// durations and sizes as their text.
func plain(v any) any {
	switch v := v.(type) {
	case config.Secret:
		return v.Value()
	case config.Duration:
		return v.String()
	}
	return v
}

func tomlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// defaultPluginDir is the directory of sluiced itself (a build tree, bin/),
// or, when installed, PREFIX/lib/sluice/plugins beside PREFIX/bin.
func defaultPluginDir() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locating plugin_dir: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return "", fmt.Errorf("locating plugin_dir: %w", err)
	}
	dir := filepath.Dir(exe)
	installed := filepath.Join(dir, "..", "lib", "sluice", "plugins")
	if _, err := os.Stat(filepath.Join(dir, "sluice-ineo")); err != nil {
		if fi, err := os.Stat(installed); err == nil && fi.IsDir() {
			return filepath.Clean(installed), nil
		}
	}
	return dir, nil
}
