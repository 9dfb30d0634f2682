// pulumi-resource-command: the project's stand-in for the pulumi-command provider plugin, v1.2.1.
//
// The Go module proxy this project builds from refuses github.com/pulumi/pulumi-command/provider at
// every version, so the real engine cannot be given the upstream plugin. This plugin is our own
// implementation of the behaviour of pulumi-command v1.2.1 (the version of the pulumi_command Python
// SDK the program uses) for the two resources the program registers:
//
//   - command:remote:Command runs its create/update/delete command over SSH (golang.org/x/crypto/ssh),
//     dialling with retries (connection.dialErrorLimit, .perDialTimeout, optional bastion proxy);
//   - command:local:Command runs it on this machine under an interpreter (default /bin/sh -c).
//
// What it reproduces, and where (file by file):
//
//   - inputs.go   the input shapes of both resources and of connection/proxy (names, required,
//     secret, defaults: port 22, user root, dialErrorLimit 10, perDialTimeout 15);
//   - check.go    Check: upstream's validation failures (same fields and wording), defaults, and
//     secret marking (connection and its password/privateKey/privateKeyPassword);
//   - diff.go     Diff: every input change updates in place, except adding or removing `triggers` as a
//     whole, which replaces. (Changing a trigger's value replaces too, but that is the SDK's doing:
//     pulumi_command registers both resources with replace_on_changes=["triggers[*]"], so the engine
//     replaces even when `update` is set; see pulumi/pulumi-command#855.)
//   - lifecycle.go Create/Update/Delete: which command runs, PULUMI_COMMAND_STDOUT/STDERR of the
//     previous run, stdout/stderr outputs (one trailing newline trimmed), unknown outputs in preview,
//     and nothing recorded when a command fails (upstream returns no partial state);
//   - output.go   output capture and streaming: each line goes to the engine as an ephemeral info
//     status of the resource while the command runs (per `logging`), and a failure's error carries
//     the command and its combined output;
//   - remote.go, dial.go, local.go: the two ways of running a command;
//   - provider.go, server.go: the provider calls (version, cancellation, customTimeouts as operation
//     deadlines) and the gRPC server, whose Diff answers in upstream's wire shape.
//
// Deliberately left out (the program uses none of them; each answers a clear error, never a no-op):
//
//   - command:remote:CopyToRemote, command:remote:CopyFile and the command:local:run invoke;
//   - local.Command assetPaths/archivePaths (Check refuses them: globbing into assets is not built);
//   - GetSchema (the engine does not need it for preview/up/destroy/refresh).
//
// Deliberately different: upstream hangs on an output line longer than 64 KiB (its line scanner
// stops reading and the command blocks on a full pipe); here such a line is logged cut at 64 KiB
// and the command goes on.
package main

import (
	"fmt"
	"os"

	"github.com/blang/semver"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// version is the plugin version GetPluginInfo answers: the pulumi_command SDK's, so the engine matches
// this plugin to the SDK's resources. Overridable with -ldflags "-X main.version=...".
var version = "1.2.1"

func main() {
	pluginVersion, err := semver.ParseTolerant(version)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-resource-command: bad version %q: %v\n", version, err)
		os.Exit(1)
	}
	err = provider.Main("command", func(host *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		return newServer(newCommandProvider(host, pluginVersion)), nil
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-resource-command: %v\n", err)
		os.Exit(1)
	}
}
