package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/blang/semver"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

// cloudflareProvider answers the engine for the six resource types of resources.go. Check and Diff
// (and Create/Update during a preview) only look at the schema and the inputs: a preview never
// calls the API.
type cloudflareProvider struct {
	plugin.UnimplementedProvider

	mu     sync.Mutex
	config *providerConfig
}

func newProvider() *cloudflareProvider { return &cloudflareProvider{} }

func (p *cloudflareProvider) GetPluginInfo(context.Context) (plugin.PluginInfo, error) {
	v, err := semver.ParseTolerant(version)
	if err != nil {
		return plugin.PluginInfo{}, fmt.Errorf("plugin version %q is not a semantic version: %w", version, err)
	}
	return plugin.PluginInfo{Version: &v}, nil
}

func (p *cloudflareProvider) Handshake(context.Context, plugin.ProviderHandshakeRequest) (*plugin.ProviderHandshakeResponse, error) {
	return &plugin.ProviderHandshakeResponse{AcceptSecrets: true, AcceptResources: true}, nil
}

func (p *cloudflareProvider) Close() error                             { return nil }
func (p *cloudflareProvider) SignalCancellation(context.Context) error { return nil }

func (p *cloudflareProvider) GetMapping(context.Context, plugin.GetMappingRequest) (plugin.GetMappingResponse, error) {
	return plugin.GetMappingResponse{}, nil
}

func (p *cloudflareProvider) GetMappings(context.Context, plugin.GetMappingsRequest) (plugin.GetMappingsResponse, error) {
	return plugin.GetMappingsResponse{}, nil
}

// ------------------------------------------------------------------------------------------ configuration
func (p *cloudflareProvider) CheckConfig(_ context.Context, req plugin.CheckConfigRequest) (plugin.CheckConfigResponse, error) {
	return plugin.CheckConfigResponse{Properties: req.News, Failures: checkConfig(req.News)}, nil
}

func (p *cloudflareProvider) DiffConfig(_ context.Context, req plugin.DiffConfigRequest) (plugin.DiffConfigResponse, error) {
	// A new token or base URL changes how the provider talks to Cloudflare, never the resources.
	olds, news := inputsOnlyConfig(req.OldInputs), inputsOnlyConfig(req.NewInputs)
	objectDiff := olds.Diff(news)
	if objectDiff == nil || !objectDiff.AnyChanges() {
		return plugin.DiffResult{Changes: plugin.DiffNone}, nil
	}
	return plugin.DiffResult{Changes: plugin.DiffSome, ChangedKeys: objectDiff.ChangedKeys()}, nil
}

func inputsOnlyConfig(m resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for key, value := range m {
		if _, ok := configKeys[string(key)]; ok {
			out[key] = plain(value)
		}
	}
	return out
}

func (p *cloudflareProvider) Configure(_ context.Context, req plugin.ConfigureRequest) (plugin.ConfigureResponse, error) {
	config, err := newProviderConfig(req.Inputs)
	if err != nil {
		return plugin.ConfigureResponse{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.config = config
	return plugin.ConfigureResponse{}, nil
}

func (p *cloudflareProvider) client() (*client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.config == nil {
		return nil, fmt.Errorf("the Cloudflare provider was not configured")
	}
	return p.config.client()
}

// ------------------------------------------------------------------------------------------ resources
func lookup(token string) (*resourceType, error) {
	if r, ok := resourceTypes[token]; ok {
		return r, nil
	}
	known := make([]string, 0, len(resourceTypes))
	for t := range resourceTypes {
		known = append(known, t)
	}
	sort.Strings(known)
	return nil, fmt.Errorf("resource type %s is not implemented by this pulumi-resource-cloudflare (the bazbii "+
		"twin's stand-in for the bridged provider); it implements only: %s", token, strings.Join(known, ", "))
}

func (p *cloudflareProvider) Check(_ context.Context, req plugin.CheckRequest) (plugin.CheckResponse, error) {
	r, err := lookup(string(req.Type))
	if err != nil {
		return plugin.CheckResponse{}, err
	}
	checked, failures := checkInputs(r, req.News)
	return plugin.CheckResponse{Properties: checked, Failures: failures}, nil
}

func (p *cloudflareProvider) Diff(_ context.Context, req plugin.DiffRequest) (plugin.DiffResponse, error) {
	r, err := lookup(string(req.Type))
	if err != nil {
		return plugin.DiffResponse{}, err
	}
	return diffInputs(r, req.OldInputs, req.NewInputs), nil
}

func (p *cloudflareProvider) Create(ctx context.Context, req plugin.CreateRequest) (plugin.CreateResponse, error) {
	r, err := lookup(string(req.Type))
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	if req.Preview {
		return plugin.CreateResponse{Properties: plannedOutputs(r, req.Properties, nil, nil)}, nil
	}
	c, err := p.client()
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	id, result, err := r.api.create(ctx, c, r, req.Properties)
	if err != nil {
		return plugin.CreateResponse{}, fmt.Errorf("creating %s %s: %w", r.name, req.Name, err)
	}
	return plugin.CreateResponse{ID: resource.ID(id), Properties: outputsFrom(r, result, req.Properties),
		Status: resource.StatusOK}, nil
}

func (p *cloudflareProvider) Read(ctx context.Context, req plugin.ReadRequest) (plugin.ReadResponse, error) {
	r, err := lookup(string(req.Type))
	if err != nil {
		return plugin.ReadResponse{}, err
	}
	id, known, err := importable(r, string(req.ID), req.State, req.Inputs)
	if err != nil {
		return plugin.ReadResponse{}, err
	}
	c, err := p.client()
	if err != nil {
		return plugin.ReadResponse{}, err
	}
	result, err := r.api.read(ctx, c, r, id, known)
	if isNotFound(err) {
		return plugin.ReadResponse{}, nil // gone: the engine drops it from the state
	}
	if err != nil {
		return plugin.ReadResponse{}, fmt.Errorf("reading %s %s: %w", r.name, req.Name, err)
	}
	outputs := outputsFrom(r, result, known)
	return plugin.ReadResponse{
		ReadResult: plugin.ReadResult{ID: resource.ID(id), Inputs: inputsFromOutputs(r.schema, req.Inputs, outputs),
			Outputs: outputs},
		Status: resource.StatusOK,
	}, nil
}

// importable finds what a read needs: the object's id and the account or zone it lives in, from
// the state, else from an import id "<account or zone id>/<object id>" (as the upstream provider
// takes them).
func importable(r *resourceType, id string, state, inputs resource.PropertyMap) (string, resource.PropertyMap, error) {
	known := resource.PropertyMap{}
	for key, value := range inputs {
		known[key] = value
	}
	for key, value := range state {
		known[key] = value
	}
	scopes := r.api.scopeKeys()
	missing := false
	for _, key := range scopes {
		if _, ok := stringInput(known, key); !ok {
			missing = true
		}
	}
	if !missing {
		return id, known, nil
	}
	parts := strings.Split(id, "/")
	if len(parts) != len(scopes)+1 {
		return "", nil, fmt.Errorf("%s: to import, give the id as %s/<id>", r.name,
			"<"+strings.Join(scopes, ">/<")+">")
	}
	for i, key := range scopes {
		known[resource.PropertyKey(key)] = resource.NewStringProperty(parts[i])
	}
	id = parts[len(parts)-1]
	if key := r.api.idKey(); key != "" {
		known[resource.PropertyKey(key)] = resource.NewStringProperty(id)
	}
	return id, known, nil
}

func (p *cloudflareProvider) Update(ctx context.Context, req plugin.UpdateRequest) (plugin.UpdateResponse, error) {
	r, err := lookup(string(req.Type))
	if err != nil {
		return plugin.UpdateResponse{}, err
	}
	if req.Preview {
		return plugin.UpdateResponse{Properties: plannedOutputs(r, req.NewInputs, req.OldInputs, req.OldOutputs)}, nil
	}
	c, err := p.client()
	if err != nil {
		return plugin.UpdateResponse{}, err
	}
	result, err := r.api.update(ctx, c, r, string(req.ID), req.NewInputs)
	if err != nil {
		return plugin.UpdateResponse{}, fmt.Errorf("updating %s %s: %w", r.name, req.Name, err)
	}
	return plugin.UpdateResponse{Properties: outputsFrom(r, result, req.NewInputs), Status: resource.StatusOK}, nil
}

func (p *cloudflareProvider) Delete(ctx context.Context, req plugin.DeleteRequest) (plugin.DeleteResponse, error) {
	r, err := lookup(string(req.Type))
	if err != nil {
		return plugin.DeleteResponse{}, err
	}
	known := resource.PropertyMap{}
	for key, value := range req.Inputs {
		known[key] = value
	}
	for key, value := range req.Outputs {
		known[key] = value
	}
	c, err := p.client()
	if err != nil {
		return plugin.DeleteResponse{}, err
	}
	if err := r.api.delete(ctx, c, r, string(req.ID), known); err != nil {
		return plugin.DeleteResponse{}, fmt.Errorf("deleting %s %s: %w", r.name, req.Name, err)
	}
	return plugin.DeleteResponse{Status: resource.StatusOK}, nil
}
