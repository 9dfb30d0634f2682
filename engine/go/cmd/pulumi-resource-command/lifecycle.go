package main

// Create, Update and Delete as pulumi-command 1.2.1 does them for both resources; the resource's own
// input struct runs the command (remote.go over SSH, local.go on this machine).
//
//   - Create runs `create` (nothing when it is unset). Update runs `update`, or `create` when
//     `update` is unset (nothing when both are). Delete runs `delete` with the inputs recorded in
//     the state. Preview runs nothing.
//   - A run after the first gets the previous run's stdout/stderr in PULUMI_COMMAND_STDOUT/STDERR
//     (unless addPreviousOutputInEnv is false, and only those that are not empty).
//   - The state is the inputs plus `stdout` and `stderr`. In a preview they are unknown: always for a
//     create; for an update when some input is unknown or differs from the old state's value.
//   - A failed command fails the operation with nothing recorded (upstream returns no partial
//     state): a failed create leaves no resource, a failed update keeps the old state, a failed
//     delete keeps the resource.

import (
	"context"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/mapper"
)

// commandResource is a decoded input struct: its commands, and how it runs one.
type commandResource interface {
	commands() *commandInputs
	run(ctx context.Context, command string, previous commandOutput, log engineLog) (commandOutput, error)
}

func (in *remoteCommandInputs) commands() *commandInputs { return &in.commandInputs }
func (in *localCommandInputs) commands() *commandInputs  { return &in.commandInputs }

// commandOutput is what a run leaves in the state.
type commandOutput struct{ stdout, stderr string }

const (
	stdoutKey resource.PropertyKey = "stdout"
	stderrKey resource.PropertyKey = "stderr"
)

// previousOutputEnv are the variables a run gets from the run before it (the empty ones are not set).
func (previous commandOutput) env() [][2]string {
	var env [][2]string
	if previous.stdout != "" {
		env = append(env, [2]string{"PULUMI_COMMAND_STDOUT", previous.stdout})
	}
	if previous.stderr != "" {
		env = append(env, [2]string{"PULUMI_COMMAND_STDERR", previous.stderr})
	}
	return env
}

func outputOf(state resource.PropertyMap) commandOutput {
	text := func(key resource.PropertyKey) string {
		if value := unwrapSecret(state[key]); value.IsString() {
			return value.StringValue()
		}
		return ""
	}
	return commandOutput{stdout: text(stdoutKey), stderr: text(stderrKey)}
}

// stateOf is the state a resource records: its inputs and its output.
func stateOf(inputs resource.PropertyMap, output commandOutput) resource.PropertyMap {
	state := inputs.Copy()
	state[stdoutKey] = resource.NewProperty(output.stdout)
	state[stderrKey] = resource.NewProperty(output.stderr)
	return state
}

func previewState(inputs resource.PropertyMap) resource.PropertyMap {
	state := inputs.Copy()
	state[stdoutKey] = resource.MakeComputed(resource.NewProperty(""))
	state[stderrKey] = resource.MakeComputed(resource.NewProperty(""))
	return state
}

// decode reads known inputs (or a state) into the kind's input struct; defaults are filled in again so
// that a state recorded without them still runs.
func (kind resourceKind) decode(props resource.PropertyMap) (commandResource, error) {
	props = withDefaults(kind.spec, dropNulls(kind.spec, props))
	var unwrapSecrets func(resource.PropertyValue) (any, bool)
	unwrapSecrets = func(value resource.PropertyValue) (any, bool) {
		if value.IsSecret() {
			return unwrapSecret(value).MapRepl(nil, unwrapSecrets), true
		}
		return nil, false
	}
	plain := props.MapRepl(nil, unwrapSecrets)
	target := kind.newInputs()
	if err := mapper.New(&mapper.Opts{IgnoreUnrecognized: true}).Decode(plain, target); err != nil {
		return nil, err
	}
	return target, nil
}

func (p *commandProvider) Create(ctx context.Context, req plugin.CreateRequest) (plugin.CreateResponse, error) {
	kind, err := kindOf(req.Type)
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	id, err := resource.NewUniqueHex(req.Name, 8, 0)
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	if req.Preview {
		return plugin.CreateResponse{ID: resource.ID(id), Properties: previewState(req.Properties)}, nil
	}
	inputs, err := kind.decode(req.Properties)
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	var output commandOutput
	if create := inputs.commands().Create; create != nil {
		ctx, done := p.operation(ctx, req.Timeout)
		defer done()
		if output, err = inputs.run(ctx, *create, commandOutput{}, p.logFor(ctx, req.URN)); err != nil {
			return plugin.CreateResponse{}, err
		}
	}
	return plugin.CreateResponse{ID: resource.ID(id), Properties: stateOf(req.Properties, output)}, nil
}

func (p *commandProvider) Update(ctx context.Context, req plugin.UpdateRequest) (plugin.UpdateResponse, error) {
	kind, err := kindOf(req.Type)
	if err != nil {
		return plugin.UpdateResponse{}, err
	}
	previous := outputOf(req.OldOutputs)
	if req.Preview {
		if outputMayChange(req.OldOutputs, req.NewInputs) {
			return plugin.UpdateResponse{Properties: previewState(req.NewInputs)}, nil
		}
		return plugin.UpdateResponse{Properties: stateOf(req.NewInputs, previous)}, nil
	}
	inputs, err := kind.decode(req.NewInputs)
	if err != nil {
		return plugin.UpdateResponse{}, err
	}
	command := inputs.commands().Update
	if command == nil {
		command = inputs.commands().Create
	}
	output := previous
	if command != nil {
		ctx, done := p.operation(ctx, req.Timeout)
		defer done()
		if output, err = inputs.run(ctx, *command, previous, p.logFor(ctx, req.URN)); err != nil {
			return plugin.UpdateResponse{}, err
		}
	}
	return plugin.UpdateResponse{Properties: stateOf(req.NewInputs, output)}, nil
}

// outputMayChange: in an update's preview, the outputs are unknown when an input is unknown or
// differs from the value the old state holds under its name (pulumi-go-provider's default data flow:
// every output depends on every input).
func outputMayChange(oldState, news resource.PropertyMap) bool {
	for key, value := range news {
		if unwrapSecret(value).IsComputed() {
			return true
		}
		if old, ok := oldState[key]; ok && !old.DeepEquals(value) {
			return true
		}
	}
	return false
}

func (p *commandProvider) Delete(ctx context.Context, req plugin.DeleteRequest) (plugin.DeleteResponse, error) {
	kind, err := kindOf(req.Type)
	if err != nil {
		return plugin.DeleteResponse{}, err
	}
	state, err := kind.decode(req.Outputs)
	if err != nil {
		return plugin.DeleteResponse{}, err
	}
	command := state.commands().Delete
	if command == nil {
		return plugin.DeleteResponse{}, nil
	}
	ctx, done := p.operation(ctx, req.Timeout)
	defer done()
	_, err = state.run(ctx, *command, outputOf(req.Outputs), p.logFor(ctx, req.URN))
	return plugin.DeleteResponse{}, err
}
