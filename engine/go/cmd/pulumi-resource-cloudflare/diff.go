package main

import (
	"sort"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

// diffInputs compares the last applied inputs with the new ones (both as Check returned them, with
// the Terraform defaults in place). A change to a property the Terraform schema marks
// RequiresReplace replaces the resource; any other change updates it in place. A value not known
// yet (a preview's unknown) counts as a change.
//
// The detailed diff has one entry per changed top-level property (add, delete, update, or their
// replace kinds). The SDK's provider server also reports a detailed diff's keys as the changed
// properties, and the CLI shows only changed properties that are top-level keys; from a top-level
// entry the CLI derives the nested changes itself (`~ randomSteering: ~ poolWeights: ...`).
func diffInputs(r *resourceType, olds, news resource.PropertyMap) plugin.DiffResult {
	oldInputs, newInputs := inputsOnly(r.schema, olds), inputsOnly(r.schema, news)
	objectDiff := oldInputs.Diff(newInputs) // an unknown new value differs from any old one
	if objectDiff == nil || !objectDiff.AnyChanges() {
		return plugin.DiffResult{Changes: plugin.DiffNone}
	}
	var changed, replaced []resource.PropertyKey
	detailed := map[string]plugin.PropertyDiff{}
	for _, key := range objectDiff.ChangedKeys() {
		kind := plugin.DiffUpdate
		switch {
		case objectDiff.Added(key):
			kind = plugin.DiffAdd
		case objectDiff.Deleted(key):
			kind = plugin.DiffDelete
		}
		changed = append(changed, key)
		if a := r.schema.byName[string(key)]; a != nil && a.replaces {
			replaced = append(replaced, key)
			kind = kind.AsReplace()
		}
		detailed[string(key)] = plugin.PropertyDiff{Kind: kind, InputDiff: true}
	}
	sort.Slice(changed, func(i, j int) bool { return changed[i] < changed[j] })
	sort.Slice(replaced, func(i, j int) bool { return replaced[i] < replaced[j] })
	return plugin.DiffResult{
		Changes:      plugin.DiffSome,
		ChangedKeys:  changed,
		ReplaceKeys:  replaced,
		DetailedDiff: detailed,
	}
}

// inputsOnly keeps the schema's inputs, secrets unwrapped (Pulumi masks them when it shows a diff).
func inputsOnly(o *objectType, m resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for key, value := range m {
		if a := o.byName[string(key)]; a != nil && a.input {
			out[key] = plain(value)
		}
	}
	return out
}
