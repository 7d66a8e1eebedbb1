package main

import (
	"fmt"
	"os"

	"github.com/gobwas/glob"
	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

// argoScripts holds the health scripts of an argocd-cm ConfigMap's resource.customizations
// block, keyed as Argo CD keys them ("group/Kind", globs allowed).
type argoScripts map[string]string

func loadArgoScripts(path string) (argoScripts, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cm struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(text, &cm); err != nil {
		return nil, err
	}
	block, ok := cm.Data["resource.customizations"]
	if cm.Kind != "ConfigMap" || !ok {
		return nil, fmt.Errorf("%s: not a ConfigMap with data.resource.customizations", path)
	}
	var entries map[string]struct {
		HealthLua string `json:"health.lua"`
	}
	if err := yaml.Unmarshal([]byte(block), &entries); err != nil {
		return nil, fmt.Errorf("%s: resource.customizations: %w", path, err)
	}
	scripts := argoScripts{}
	for key, e := range entries {
		if e.HealthLua != "" {
			scripts[key] = e.HealthLua
		}
	}
	return scripts, nil
}

// forKind picks the script Argo CD would run for group/kind: the exact key first, else the
// first glob key that matches.
func (s argoScripts) forKind(group, kind string) (string, error) {
	key := group + "/" + kind
	if script, ok := s[key]; ok {
		return script, nil
	}
	for pattern, script := range s {
		g, err := glob.Compile(pattern)
		if err != nil {
			return "", fmt.Errorf("key %q: %w", pattern, err)
		}
		if g.Match(key) {
			return script, nil
		}
	}
	return "", fmt.Errorf("no health.lua for %s", key)
}

// argoHealth runs a health script the way Argo CD runs a configured health.lua: gopher-lua
// with only the package, base and table libraries (no string, math, io or os), the live
// object as the global `obj`, and the table the script returns read for `status` and
// `message`.
func argoHealth(script string, obj map[string]interface{}) (string, string, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return "", "", err
	}
	table, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", L.Get(-1).Type())
	}
	st, _ := table.RawGetString("status").(lua.LString)
	msg, _ := table.RawGetString("message").(lua.LString)
	switch string(st) {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		return "", "", fmt.Errorf("the script returned the status %q, which Argo CD does not know", string(st))
	}
	return string(st), string(msg), nil
}

// toLua turns decoded JSON into Lua values: objects into tables keyed by name, lists into
// tables indexed from 1 (so ipairs works), numbers into Lua numbers.
func toLua(L *lua.LState, v interface{}) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []interface{}:
		t := L.NewTable()
		for _, item := range v {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]interface{}:
		t := L.NewTable()
		for k, item := range v {
			t.RawSetString(k, toLua(L, item))
		}
		return t
	default:
		return lua.LString(fmt.Sprint(v))
	}
}
