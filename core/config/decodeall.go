package config

import (
	"encoding"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// decodeEach decodes every key of the file on its own into a fresh Config
// and returns every decode error (values of the wrong type, bad durations,
// sizes, modes, secrets), plus the Config as far as it decoded.
//
// toml.Decode into the Config stops at the first error, and it walks the
// file's tables as Go maps, so which of several bad keys it reports changes
// from run to run; fixing a config that way takes one reload per mistake.
// Here each table is decoded into toml.Primitives and each value into its
// field separately. Keys that name no field exactly are skipped: unknownKeys
// reports them.
func decodeEach(src string) (*Config, []error) {
	var top map[string]toml.Primitive
	md, err := toml.Decode(src, &top)
	if err != nil {
		return nil, []error{err}
	}
	cfg := Default()
	var errs []error
	var walk func(m map[string]toml.Primitive, v reflect.Value)
	walk = func(m map[string]toml.Primitive, v reflect.Value) {
		t := v.Type()
		for name, prim := range m {
			f, ok := fieldByTOMLName(t, name)
			if !ok {
				continue
			}
			fv := v.FieldByIndex(f.Index)
			ft := f.Type
			if ft.Kind() == reflect.Pointer && isTableType(ft.Elem()) {
				ft = ft.Elem()
			}
			if !isTableType(ft) {
				if err := md.PrimitiveDecode(prim, fv.Addr().Interface()); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			// A table: decoding a non-table into a map succeeds silently,
			// so look first and let the decoder word the mismatch.
			var probe any
			if err := md.PrimitiveDecode(prim, &probe); err != nil {
				errs = append(errs, err)
				continue
			}
			if _, isTable := probe.(map[string]any); !isTable {
				if err := md.PrimitiveDecode(prim, reflect.New(ft).Interface()); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			var sub map[string]toml.Primitive
			if err := md.PrimitiveDecode(prim, &sub); err != nil {
				errs = append(errs, err)
				continue
			}
			target := fv
			if fv.Kind() == reflect.Pointer {
				if fv.IsNil() {
					fv.Set(reflect.New(ft))
				}
				target = fv.Elem()
			}
			walk(sub, target)
		}
	}
	walk(top, reflect.ValueOf(cfg).Elem())
	return cfg, errs
}

// isTableType: a struct the decoder fills field by field, rather than a
// leaf type that decodes itself (Duration, Secret, ...).
func isTableType(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(unmarshalerType) &&
		!reflect.PointerTo(t).Implements(textUnmarshalerType)
}

func fieldByTOMLName(t reflect.Type, name string) (reflect.StructField, bool) {
	for f := range t.Fields() {
		if tomlName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// decodeErrors lists, in file order, everything wrong with a file whose
// decode into the Config failed with first: every value of the wrong type
// (decodeEach), every unknown key, and the validation errors of the other
// keys, so one edit can fix them all. Validation findings on a key that
// failed to decode, or under it, are left out: they would judge the default
// that stood in for the bad value.
func decodeErrors(path string, data []byte, ix *keyIndex, rawMD toml.MetaData, first error) error {
	var errs []*Error
	bad := map[string]bool{}
	for _, u := range unknownKeysOf(rawMD, nil) {
		errs = append(errs, &Error{File: path, Line: ix.line(u.key), Key: u.key, Msg: u.msg})
		bad[u.key] = true
	}
	cfg, decodeErrs := decodeEach(string(data))
	var typed []*Error
	for _, err := range decodeErrs {
		if e := decodeError(path, ix, err); !bad[e.Key] {
			typed = append(typed, e)
		}
	}
	if len(typed) == 0 {
		// decodeEach found nothing the whole decode did (a key matched
		// only case-insensitively, say): report the decoder's own error,
		// unless it is about a key already reported as unknown.
		if e := decodeError(path, ix, first); !bad[e.Key] {
			typed = append(typed, e)
		}
	}
	for _, e := range typed {
		bad[e.Key] = true
	}
	errs = append(errs, typed...)
	if cfg != nil {
		cfg.Path = path
		covered := func(key string) bool {
			for k := range bad {
				if key == k || strings.HasPrefix(key, k+".") || strings.HasPrefix(k, key+".") {
					return true
				}
			}
			return false
		}
		findings := append(cfg.normalizeAndValidate(), cfg.resolveSecrets(secretBaseDir(path))...)
		for _, f := range findings {
			if !covered(f.key) {
				errs = append(errs, &Error{File: path, Line: ix.line(f.key), Key: f.key, Msg: f.msg})
			}
		}
	}
	return joinErrors(errs)
}
