package main

// Diff, as pulumi-command 1.2.1 answers it (pulumi-go-provider's infer default diff for a resource
// with an Update):
//
//   - the old inputs the engine sends are compared with the new ones; `ignoreChanges` paths take
//     their value from the old state first, and a "version" or "__"-prefixed new input is ignored;
//   - every changed property path is an in-place update, except a path that is exactly a property
//     the schema marks replaceOnChanges (only `triggers`, so: triggers added or removed as a whole);
//   - the answer carries the detailed diff (per property path) and, as top-level keys, the changed
//     and replacing properties.
//
// A change of one trigger's value (path "triggers[0]") is an update here, as upstream; it is the
// pulumi_command SDK's replace_on_changes=["triggers[*]"] resource option that makes the engine
// replace the resource for it, with or without an `update` command.

import (
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

// replaceOnChanges are the input properties upstream's schema marks replaceOnChanges.
var replaceOnChanges = map[string]bool{"triggers": true}

func diffInputs(req plugin.DiffRequest) (plugin.DiffResult, error) {
	news := req.NewInputs.Copy()
	for _, ignored := range req.IgnoreChanges {
		path, err := resource.ParsePropertyPath(ignored)
		if err != nil {
			return plugin.DiffResult{}, err
		}
		if old, ok := path.Get(resource.NewProperty(req.OldOutputs)); ok {
			path.Set(resource.NewProperty(news), old)
		}
	}
	for key := range news {
		if key == "version" || strings.HasPrefix(string(key), "__") {
			delete(news, key)
		}
	}

	objectDiff := req.OldInputs.Diff(news)
	detailed := plugin.NewDetailedDiffFromObjectDiff(objectDiff, false)
	for path, change := range detailed {
		if replaceOnChanges[path] {
			detailed[path] = plugin.PropertyDiff{Kind: change.Kind.AsReplace(), InputDiff: change.InputDiff}
		}
	}
	changes := plugin.DiffNone
	if objectDiff != nil && objectDiff.AnyChanges() {
		changes = plugin.DiffSome
	}
	return plugin.DiffResult{Changes: changes, DetailedDiff: detailed}, nil
}
