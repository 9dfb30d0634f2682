//go:build tools

// The Pulumi CLI is built from this module (engine/build.py), so that it and the plugins under cmd/
// share one resolution of github.com/pulumi/pulumi/{pkg,sdk}/v3 at the version engine/versions.toml pins.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
