package main

import (
	"sort"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

// diffInputs compares the last applied inputs with the new ones (both as Check returned them, with
// the Terraform defaults in place). A change to a property the Terraform schema marks
// RequiresReplace replaces the resource; any other change updates it in place. A value not known
// yet (a preview's unknown) counts as a change. The detailed diff names every changed path, with
// the replace kinds on the properties that force a replacement.
func diffInputs(r *resourceType, olds, news resource.PropertyMap) plugin.DiffResult {
	oldInputs, newInputs := inputsOnly(r.schema, olds), inputsOnly(r.schema, news)
	objectDiff := oldInputs.Diff(newInputs) // an unknown new value differs from any old one
	if objectDiff == nil || !objectDiff.AnyChanges() {
		return plugin.DiffResult{Changes: plugin.DiffNone}
	}
	var changed, replaced []resource.PropertyKey
	for _, key := range objectDiff.ChangedKeys() {
		changed = append(changed, key)
		if a := r.schema.byName[string(key)]; a != nil && a.replaces {
			replaced = append(replaced, key)
		}
	}
	sort.Slice(changed, func(i, j int) bool { return changed[i] < changed[j] })
	sort.Slice(replaced, func(i, j int) bool { return replaced[i] < replaced[j] })

	detailed := plugin.NewDetailedDiffFromObjectDiff(objectDiff, true)
	for path, propertyDiff := range detailed {
		if a := r.schema.byName[rootOf(path)]; a != nil && a.replaces {
			propertyDiff.Kind = propertyDiff.Kind.AsReplace()
			detailed[path] = propertyDiff
		}
	}
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

func rootOf(path string) string {
	if i := strings.IndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return path
}
