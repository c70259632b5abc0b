// Package yaegi_test loads the certfetch plugin from the working tree exactly
// the way Traefik 3.x and the plugin catalog do, and drives the interpreted
// handler. It is a nested module because the catalog refuses a plugin whose
// go.mod requires github.com/traefik/yaegi.
package yaegi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mitchellh/mapstructure"
	"github.com/traefik/yaegi/interp"
	"github.com/traefik/yaegi/stdlib"
	"go.yaml.in/yaml/v3"
)

// repoRoot is the plugin's module root, seen from this nested module.
const repoRoot = "../.."

// manifest is the part of .traefik.yml that Traefik and the catalog read.
type manifest struct {
	DisplayName string         `yaml:"displayName"`
	Type        string         `yaml:"type"`
	Import      string         `yaml:"import"`
	BasePkg     string         `yaml:"basePkg"`
	Summary     string         `yaml:"summary"`
	IconPath    string         `yaml:"iconPath"`
	TestData    map[string]any `yaml:"testData"`
}

func readManifest(tb testing.TB) manifest {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, ".traefik.yml"))
	if err != nil {
		tb.Fatalf("read manifest: %v", err)
	}
	var m manifest
	if err := yaml.Unmarshal(data, &m); err != nil {
		tb.Fatalf("parse .traefik.yml: %v", err)
	}
	return m
}

// interpretedPlugin is the plugin as Traefik holds it: New and CreateConfig
// evaluated in a Yaegi interpreter that has the standard library only.
type interpretedPlugin struct {
	fnNew          reflect.Value
	fnCreateConfig reflect.Value
}

// loadPlugin copies the module root's sources into a fresh GOPATH laid out as
// Traefik lays out local plugins (plugins-local/src/<moduleName>/) and
// imports the package named by the manifest, as Traefik's newInterpreter does.
func loadPlugin(tb testing.TB) *interpretedPlugin {
	tb.Helper()
	m := readManifest(tb)
	goPath := tb.TempDir()
	copyPluginSources(tb, repoRoot, filepath.Join(goPath, "src", filepath.FromSlash(m.Import)))
	return interpret(tb, goPath, m.Import, m.BasePkg)
}

// interpret imports importPath from goPath into an interpreter that has the
// standard library only, and evaluates New and CreateConfig.
func interpret(tb testing.TB, goPath, importPath, basePkg string) *interpretedPlugin {
	tb.Helper()
	i := interp.New(interp.Options{GoPath: goPath, Env: os.Environ(), Stdout: io.Discard, Stderr: io.Discard})
	if err := i.Use(stdlib.Symbols); err != nil {
		tb.Fatalf("load stdlib symbols: %v", err)
	}
	if _, err := i.Eval(fmt.Sprintf("import %q", importPath)); err != nil {
		tb.Fatalf("import plugin %q: %v", importPath, err)
	}
	if basePkg == "" {
		basePkg = strings.ReplaceAll(path.Base(importPath), "-", "_")
	}
	fnNew, err := i.Eval(basePkg + ".New")
	if err != nil {
		tb.Fatalf("eval New: %v", err)
	}
	fnCreateConfig, err := i.Eval(basePkg + ".CreateConfig")
	if err != nil {
		tb.Fatalf("eval CreateConfig: %v", err)
	}
	return &interpretedPlugin{fnNew: fnNew, fnCreateConfig: fnCreateConfig}
}

// copyPluginSources copies what Traefik's plugin archive holds at the module
// root and Yaegi reads: the non-test Go files, go.mod and the manifest.
func copyPluginSources(tb testing.TB, src, dst string) {
	tb.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		tb.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		wanted := name == "go.mod" || name == ".traefik.yml" ||
			(strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go"))
		if e.IsDir() || !wanted {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// createConfig decodes settings into a fresh CreateConfig() result the way
// Traefik's yaegiMiddlewareBuilder.createConfig does.
func (p *interpretedPlugin) createConfig(settings map[string]any) (reflect.Value, error) {
	results := p.fnCreateConfig.Call(nil)
	if len(results) != 1 {
		return reflect.Value{}, fmt.Errorf("CreateConfig returned %d values", len(results))
	}
	cfg := results[0]
	if len(settings) == 0 {
		return cfg, nil
	}
	decoder, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.StringToSliceHookFunc(","),
		WeaklyTypedInput: true,
		Result:           cfg.Interface(),
	})
	if err != nil {
		return reflect.Value{}, fmt.Errorf("create configuration decoder: %w", err)
	}
	if err := decoder.Decode(settings); err != nil {
		return reflect.Value{}, fmt.Errorf("decode configuration: %w", err)
	}
	return cfg, nil
}

// newHandler decodes settings and calls New by reflection, as Traefik does
// for every router that uses the middleware.
func (p *interpretedPlugin) newHandler(settings map[string]any, next http.Handler) (http.Handler, error) {
	cfg, err := p.createConfig(settings)
	if err != nil {
		return nil, err
	}
	args := []reflect.Value{reflect.ValueOf(context.Background()), reflect.ValueOf(next), cfg, reflect.ValueOf("certfetch-test")}
	results := p.fnNew.Call(args)
	if len(results) > 1 && results[1].Interface() != nil {
		err, ok := results[1].Interface().(error)
		if !ok {
			return nil, fmt.Errorf("New returned a non-error %T", results[1].Interface())
		}
		return nil, err
	}
	h, ok := results[0].Interface().(http.Handler)
	if !ok {
		return nil, fmt.Errorf("New returned %T, not an http.Handler", results[0].Interface())
	}
	return h, nil
}
