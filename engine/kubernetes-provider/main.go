// pulumi-resource-kubernetes, built from github.com/pulumi/pulumi-kubernetes/provider/v4 at the version
// engine/versions.toml pins. Upstream's cmd/pulumi-resource-kubernetes embeds a schema that its
// `go generate` step writes; the build (engine/build.py) writes the same two files next to this one
// from the module's schema.json and terraform-mapping.json, with the plugin version set.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
)

//go:embed schema-embed.json
var pulumiSchema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

// version is set with -ldflags by the build (the plugin version the Python SDK asks for).
var version = "0.0.0-dev"

func main() { provider.Serve("kubernetes", version, pulumiSchema, terraformMapping) }
