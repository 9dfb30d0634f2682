package main

// Check and Diff on property maps, without an engine: the details the engine-level tests
// (tests/engine/test_command_provider.py) cannot see, because the pulumi_command SDK already
// validates types, fills in the connection defaults and forces replacement on trigger changes.

import (
	"reflect"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

var (
	remoteSpec = resourceKinds["command:remote:Command"].spec
	localSpec  = resourceKinds["command:local:Command"].spec
)

func props(m map[string]any) resource.PropertyMap { return resource.NewPropertyMapFromMap(m) }

func TestCheckFillsConnectionDefaultsAndMarksItSecret(t *testing.T) {
	inputs, failures := checkInputs(remoteSpec, props(map[string]any{
		"create": "true",
		"connection": map[string]any{
			"host": "203.0.113.5", "privateKey": "KEY",
			"proxy": map[string]any{"host": "203.0.113.1", "port": 2222.0},
		},
		"stdin": nil, // a null is dropped
	}))
	if len(failures) != 0 {
		t.Fatalf("failures: %v", failures)
	}
	if _, ok := inputs["stdin"]; ok {
		t.Errorf("null stdin kept: %v", inputs)
	}
	connection := inputs["connection"]
	if !connection.IsSecret() {
		t.Fatalf("connection not secret: %v", connection)
	}
	fields := connection.SecretValue().Element.ObjectValue()
	if !fields["privateKey"].IsSecret() {
		t.Errorf("privateKey not secret inside the connection: %v", fields["privateKey"])
	}
	want := map[resource.PropertyKey]any{"user": "root", "port": 22.0, "dialErrorLimit": 10.0, "perDialTimeout": 15.0}
	for key, value := range want {
		if got := fields[key].V; got != value {
			t.Errorf("connection.%s = %v, want %v", key, got, value)
		}
	}
	proxy := fields["proxy"].ObjectValue()
	if proxy["user"].V != "root" || proxy["port"].V != 2222.0 || proxy["dialErrorLimit"].V != 10.0 {
		t.Errorf("proxy defaults: %v", proxy)
	}
	if _, ok := inputs["addPreviousOutputInEnv"]; ok {
		t.Errorf("addPreviousOutputInEnv has no schema default: %v", inputs)
	}
}

func TestCheckFailuresAreWordedAsUpstreamsMapper(t *testing.T) {
	cases := []struct {
		name   string
		spec   *objectSpec
		inputs map[string]any
		want   []plugin.CheckFailure
	}{
		{"missing connection", remoteSpec, map[string]any{"create": "x"}, []plugin.CheckFailure{
			{Property: "connection", Reason: "Missing required field 'connection' on 'remote.CommandInputs'"},
		}},
		{"missing host", remoteSpec, map[string]any{"connection": map[string]any{"user": "u"}}, []plugin.CheckFailure{
			{Property: "connection", Reason: "An error occurred decoding 'CommandInputs.connection': 1 failures " +
				"decoding:\n\thost: Missing required field 'host' on 'remote.Connection'"},
		}},
		{"wrong scalar", localSpec, map[string]any{"create": 5.0}, []plugin.CheckFailure{
			{Property: "create", Reason: "Field 'create' on 'local.CommandInputs' must be a 'string'; got 'float64' instead"},
		}},
		{"enum type named", localSpec, map[string]any{"logging": true}, []plugin.CheckFailure{
			{Property: "logging", Reason: "Field 'logging' on 'local.CommandInputs' must be a 'local.Logging'; got 'bool' instead"},
		}},
		{"map value", localSpec, map[string]any{"environment": map[string]any{"A": 1.0}}, []plugin.CheckFailure{
			{Property: "environment[A] value", Reason: "Field 'environment[A] value' on 'local.CommandInputs' must be a " +
				"'string'; got 'float64' instead"},
		}},
		{"unknown field", localSpec, map[string]any{"comand": "typo"}, []plugin.CheckFailure{
			{Property: "comand", Reason: "Unrecognized field 'comand' on 'local.CommandInputs'"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, failures := checkInputs(c.spec, props(c.inputs))
			if !reflect.DeepEqual(failures, c.want) {
				t.Errorf("failures:\n got %q\nwant %q", failures, c.want)
			}
		})
	}
}

func TestCheckLetsUnknownsAndSecretsThrough(t *testing.T) {
	inputs := resource.PropertyMap{
		"create": resource.MakeComputed(resource.NewProperty("")),
		"stdin":  resource.MakeSecret(resource.NewProperty("pw")),
		"connection": resource.MakeSecret(resource.NewProperty(props(map[string]any{
			"host": "h", "port": resource.MakeComputed(resource.NewProperty(0.0)),
		}))),
	}
	checked, failures := checkInputs(remoteSpec, inputs)
	if len(failures) != 0 {
		t.Fatalf("failures: %v", failures)
	}
	if !checked["stdin"].IsSecret() || !checked["create"].IsComputed() {
		t.Errorf("stdin/create changed: %v", checked)
	}
	port := checked["connection"].SecretValue().Element.ObjectValue()["port"]
	if !port.IsComputed() {
		t.Errorf("an unknown port was defaulted: %v", port)
	}
}

func TestDiffUpdatesInPlaceExceptTriggersAddedOrRemoved(t *testing.T) {
	old := props(map[string]any{"create": "a", "triggers": []any{"t1"}})
	cases := []struct {
		name        string
		news        map[string]any
		wantChanges plugin.DiffChanges
		wantKinds   map[string]plugin.DiffKind
	}{
		{"nothing", map[string]any{"create": "a", "triggers": []any{"t1"}}, plugin.DiffNone, map[string]plugin.DiffKind{}},
		{"command", map[string]any{"create": "b", "triggers": []any{"t1"}}, plugin.DiffSome,
			map[string]plugin.DiffKind{"create": plugin.DiffUpdate}},
		// The SDK's replace_on_changes=["triggers[*]"] turns this one into a replacement in the engine.
		{"trigger value", map[string]any{"create": "a", "triggers": []any{"t2"}}, plugin.DiffSome,
			map[string]plugin.DiffKind{"triggers[0]": plugin.DiffUpdate}},
		{"triggers removed", map[string]any{"create": "a"}, plugin.DiffSome,
			map[string]plugin.DiffKind{"triggers": plugin.DiffDeleteReplace}},
		{"engine's version input ignored", map[string]any{"create": "a", "triggers": []any{"t1"}, "version": "1.2.1"},
			plugin.DiffNone, map[string]plugin.DiffKind{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			diff, err := diffInputs(plugin.DiffRequest{OldInputs: old, OldOutputs: old, NewInputs: props(c.news)})
			if err != nil {
				t.Fatal(err)
			}
			kinds := map[string]plugin.DiffKind{}
			for path, change := range diff.DetailedDiff {
				kinds[path] = change.Kind
			}
			if diff.Changes != c.wantChanges || !reflect.DeepEqual(kinds, c.wantKinds) {
				t.Errorf("got %v %v, want %v %v", diff.Changes, kinds, c.wantChanges, c.wantKinds)
			}
		})
	}
}

func TestDiffTakesIgnoredChangesFromTheOldState(t *testing.T) {
	old := props(map[string]any{"create": "a", "stdin": "s1"})
	diff, err := diffInputs(plugin.DiffRequest{
		OldInputs: old, OldOutputs: old, NewInputs: props(map[string]any{"create": "a", "stdin": "s2"}),
		IgnoreChanges: []string{"stdin"},
	})
	if err != nil || diff.Changes != plugin.DiffNone {
		t.Errorf("got %v (%v), want no changes", diff, err)
	}
}

func TestDiffAnswersTopLevelKeysWithTheDetailedDiff(t *testing.T) {
	response := marshalDiff(plugin.DiffResult{Changes: plugin.DiffSome, DetailedDiff: map[string]plugin.PropertyDiff{
		"triggers[0]": {Kind: plugin.DiffUpdateReplace}, "triggers[1]": {Kind: plugin.DiffAdd},
		"create": {Kind: plugin.DiffUpdate},
	}})
	if !response.HasDetailedDiff || len(response.DetailedDiff) != 3 {
		t.Fatalf("detailed diff missing: %v", response)
	}
	diffs, replaces := map[string]int{}, map[string]int{}
	for _, k := range response.Diffs {
		diffs[k]++
	}
	for _, k := range response.Replaces {
		replaces[k]++
	}
	if !reflect.DeepEqual(diffs, map[string]int{"triggers": 1, "create": 1}) ||
		!reflect.DeepEqual(replaces, map[string]int{"triggers": 1}) {
		t.Errorf("diffs %v replaces %v", response.Diffs, response.Replaces)
	}
}
