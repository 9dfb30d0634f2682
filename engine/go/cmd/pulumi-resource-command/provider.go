package main

// The plugin.Provider the gRPC server (server.go) serves: the provider-level calls, and the resource
// calls dispatched to the resource kind the request's type names (lifecycle.go does the rest).

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/blang/semver"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
)

// resourceKind is one resource type the plugin implements.
type resourceKind struct {
	spec *objectSpec
	// newInputs returns a fresh input struct to decode into (a pointer to remoteCommandInputs or
	// localCommandInputs), which knows how to run a command.
	newInputs func() commandResource
}

var resourceKinds = map[tokens.Type]resourceKind{
	"command:remote:Command": {
		spec:      specOf(reflect.TypeFor[remoteCommandInputs]()),
		newInputs: func() commandResource { return &remoteCommandInputs{} },
	},
	"command:local:Command": {
		spec:      specOf(reflect.TypeFor[localCommandInputs]()),
		newInputs: func() commandResource { return &localCommandInputs{} },
	},
}

func kindOf(typ tokens.Type) (resourceKind, error) {
	if kind, ok := resourceKinds[typ]; ok {
		return kind, nil
	}
	return resourceKind{}, fmt.Errorf("resource type %s is not implemented by pulumi-resource-command, "+
		"bazbii-infra's stand-in for pulumi-command %s: it implements only command:local:Command and "+
		"command:remote:Command", typ, version)
}

type commandProvider struct {
	plugin.UnimplementedProvider

	host    *provider.HostClient // nil when the plugin was started without an engine to log to
	version semver.Version

	// The contexts of running operations, cancelled together when the engine signals cancellation.
	mu      sync.Mutex
	running map[*context.CancelFunc]struct{}
}

func newCommandProvider(host *provider.HostClient, version semver.Version) *commandProvider {
	return &commandProvider{host: host, version: version, running: map[*context.CancelFunc]struct{}{}}
}

// operation gives a Create/Update/Delete its context: cancelled by SignalCancellation, and bounded by
// the resource's customTimeouts (seconds; 0 is none), as pulumi-go-provider does for upstream.
func (p *commandProvider) operation(ctx context.Context, timeoutSeconds float64) (context.Context, func()) {
	var cancel context.CancelFunc
	if timeoutSeconds > 0 {
		ctx, cancel = context.WithTimeout(ctx, time.Duration(timeoutSeconds*float64(time.Second)))
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	p.mu.Lock()
	p.running[&cancel] = struct{}{}
	p.mu.Unlock()
	return ctx, func() {
		p.mu.Lock()
		delete(p.running, &cancel)
		p.mu.Unlock()
		cancel()
	}
}

func (p *commandProvider) SignalCancellation(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for cancel := range p.running {
		(*cancel)()
	}
	return nil
}

func (p *commandProvider) Close() error { return nil }

func (p *commandProvider) GetPluginInfo(context.Context) (plugin.PluginInfo, error) {
	return plugin.PluginInfo{Version: &p.version}, nil
}

func (p *commandProvider) Handshake(
	context.Context, plugin.ProviderHandshakeRequest,
) (*plugin.ProviderHandshakeResponse, error) {
	return &plugin.ProviderHandshakeResponse{AcceptSecrets: true, AcceptResources: true}, nil
}

// The provider has no configuration (upstream's has none either): any is accepted as it is.
func (p *commandProvider) CheckConfig(_ context.Context, req plugin.CheckConfigRequest) (plugin.CheckConfigResponse, error) {
	return plugin.CheckConfigResponse{Properties: req.News}, nil
}

func (p *commandProvider) DiffConfig(_ context.Context, req plugin.DiffConfigRequest) (plugin.DiffConfigResponse, error) {
	withoutVersion := func(m resource.PropertyMap) resource.PropertyMap {
		m = m.Copy()
		delete(m, "version")
		return m
	}
	return diffInputs(plugin.DiffRequest{
		OldInputs: withoutVersion(req.OldInputs), OldOutputs: req.OldOutputs, NewInputs: withoutVersion(req.NewInputs),
	})
}

func (p *commandProvider) Configure(context.Context, plugin.ConfigureRequest) (plugin.ConfigureResponse, error) {
	return plugin.ConfigureResponse{}, nil
}

func (p *commandProvider) GetSchema(context.Context, plugin.GetSchemaRequest) (plugin.GetSchemaResponse, error) {
	return plugin.GetSchemaResponse{}, status.Errorf(codes.Unimplemented,
		"pulumi-resource-command, bazbii-infra's stand-in for pulumi-command %s, carries no schema", version)
}

func (p *commandProvider) Invoke(_ context.Context, req plugin.InvokeRequest) (plugin.InvokeResponse, error) {
	return plugin.InvokeResponse{}, fmt.Errorf("function %s is not implemented by pulumi-resource-command, "+
		"bazbii-infra's stand-in for pulumi-command %s (it implements no functions)", req.Tok, version)
}

func (p *commandProvider) Check(_ context.Context, req plugin.CheckRequest) (plugin.CheckResponse, error) {
	kind, err := kindOf(req.Type)
	if err != nil {
		return plugin.CheckResponse{}, err
	}
	inputs, failures := checkInputs(kind.spec, req.News)
	return plugin.CheckResponse{Properties: inputs, Failures: failures}, nil
}

func (p *commandProvider) Diff(_ context.Context, req plugin.DiffRequest) (plugin.DiffResponse, error) {
	kind, err := kindOf(req.Type)
	if err != nil {
		return plugin.DiffResponse{}, err
	}
	if req.OldInputs == nil {
		// An engine that sends no old inputs: the inputs are the state's properties of input names.
		req.OldInputs = resource.PropertyMap{}
		for _, field := range kind.spec.fields {
			if value, ok := req.OldOutputs[field.key]; ok {
				req.OldInputs[field.key] = value
			}
		}
	}
	return diffInputs(req)
}

// Read returns the state as it is: a command has nothing to read back (upstream's default Read).
func (p *commandProvider) Read(_ context.Context, req plugin.ReadRequest) (plugin.ReadResponse, error) {
	if _, err := kindOf(req.Type); err != nil {
		return plugin.ReadResponse{}, err
	}
	return plugin.ReadResponse{ReadResult: plugin.ReadResult{ID: req.ID, Inputs: req.Inputs, Outputs: req.State}}, nil
}

// engineLog sends a resource's messages to the engine: the CLI shows them on the resource's line.
type engineLog struct {
	ctx  context.Context
	host *provider.HostClient
	urn  resource.URN
}

func (p *commandProvider) logFor(ctx context.Context, urn resource.URN) engineLog {
	return engineLog{ctx: ctx, host: p.host, urn: urn}
}

// status is an ephemeral message (the progress display's info column; not kept in the summary).
func (l engineLog) status(severity diag.Severity, message string) {
	if l.host != nil {
		_ = l.host.LogStatus(l.ctx, severity, l.urn, strings.ToValidUTF8(message, "\uFFFD"))
	}
}

// message is a diagnostic kept in the update's output.
func (l engineLog) message(severity diag.Severity, message string) {
	if l.host != nil {
		_ = l.host.Log(l.ctx, severity, l.urn, message)
	}
}
