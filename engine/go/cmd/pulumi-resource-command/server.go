package main

// The gRPC server: the SDK's plugin.NewProviderServer around commandProvider, with Diff answered in
// the shape pulumi-go-provider (upstream's framework) gives it. The SDK's server sends the detailed
// diff without HasDetailedDiff, so the engine would drop it and read the property paths as changed
// keys; upstream sends HasDetailedDiff with the top-level keys that change and that replace.

import (
	"context"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

type server struct {
	pulumirpc.ResourceProviderServer
	provider *commandProvider
}

func newServer(p *commandProvider) pulumirpc.ResourceProviderServer {
	return &server{ResourceProviderServer: plugin.NewProviderServer(p), provider: p}
}

func (s *server) Diff(ctx context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	options := func(label string) plugin.MarshalOptions {
		return plugin.MarshalOptions{Label: label, KeepUnknowns: true, KeepSecrets: true, KeepResources: true}
	}
	var oldInputs resource.PropertyMap // nil: an engine that sends none (provider.Diff derives them)
	if req.GetOldInputs() != nil {
		var err error
		if oldInputs, err = plugin.UnmarshalProperties(req.GetOldInputs(), options("oldInputs")); err != nil {
			return nil, err
		}
	}
	oldOutputs, err := plugin.UnmarshalProperties(req.GetOlds(), options("oldOutputs"))
	if err != nil {
		return nil, err
	}
	newInputs, err := plugin.UnmarshalProperties(req.GetNews(), options("newInputs"))
	if err != nil {
		return nil, err
	}
	urn := resource.URN(req.GetUrn())
	diff, err := s.provider.Diff(ctx, plugin.DiffRequest{
		URN:           urn,
		Name:          urn.Name(),
		Type:          urn.Type(),
		ID:            resource.ID(req.GetId()),
		OldInputs:     oldInputs,
		OldOutputs:    oldOutputs,
		NewInputs:     newInputs,
		AllowUnknowns: true,
		IgnoreChanges: req.GetIgnoreChanges(),
	})
	if err != nil {
		return nil, err
	}
	return marshalDiff(diff), nil
}

var rpcDiffKinds = map[plugin.DiffKind]pulumirpc.PropertyDiff_Kind{
	plugin.DiffAdd:           pulumirpc.PropertyDiff_ADD,
	plugin.DiffAddReplace:    pulumirpc.PropertyDiff_ADD_REPLACE,
	plugin.DiffDelete:        pulumirpc.PropertyDiff_DELETE,
	plugin.DiffDeleteReplace: pulumirpc.PropertyDiff_DELETE_REPLACE,
	plugin.DiffUpdate:        pulumirpc.PropertyDiff_UPDATE,
	plugin.DiffUpdateReplace: pulumirpc.PropertyDiff_UPDATE_REPLACE,
}

func marshalDiff(diff plugin.DiffResult) *pulumirpc.DiffResponse {
	response := &pulumirpc.DiffResponse{
		Changes:             pulumirpc.DiffResponse_DIFF_NONE,
		DeleteBeforeReplace: diff.DeleteBeforeReplace,
		HasDetailedDiff:     true,
		DetailedDiff:        map[string]*pulumirpc.PropertyDiff{},
	}
	if diff.Changes == plugin.DiffSome {
		response.Changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	changed, replaced := map[string]bool{}, map[string]bool{}
	for path, change := range diff.DetailedDiff {
		response.DetailedDiff[path] = &pulumirpc.PropertyDiff{Kind: rpcDiffKinds[change.Kind], InputDiff: change.InputDiff}
		key := topLevelKey(path)
		if !changed[key] {
			changed[key] = true
			response.Diffs = append(response.Diffs, key)
		}
		if change.Kind.IsReplace() && !replaced[key] {
			replaced[key] = true
			response.Replaces = append(response.Replaces, key)
		}
	}
	return response
}

// topLevelKey is the property a diff path is in ("triggers" for "triggers[0]").
func topLevelKey(path string) string {
	if parsed, err := resource.ParsePropertyPath(path); err == nil && len(parsed) > 0 {
		if key, ok := parsed[0].(string); ok {
			return key
		}
	}
	return path
}
