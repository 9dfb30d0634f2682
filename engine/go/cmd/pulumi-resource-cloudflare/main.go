// pulumi-resource-cloudflare: the project's own stand-in for the bridged Cloudflare provider.
//
// The Go module proxy this project builds from refuses github.com/pulumi/pulumi-cloudflare/provider/v6
// at every version, so the real engine cannot be given the upstream plugin. This plugin answers the
// resource types the bazbii program registers through the Python SDK pulumi_cloudflare==6.23.1
// (LoadBalancerMonitor, LoadBalancerPool, LoadBalancer, DnsRecord, ZeroTrustTunnelCloudflared,
// ZeroTrustTunnelCloudflaredConfig) the way the bridged provider does: the same property names and
// types, the Terraform v5 schema's defaults, validators and RequiresReplace, the same Cloudflare API
// v4 calls at `cloudflare:baseUrl` (default https://api.cloudflare.com/client/v4) with
// `cloudflare:apiToken`. Any other type is refused with an error naming it.
//
// The twin points it at its Cloudflare emulator (twin/cloudflare); nothing in it is specific to the
// emulator.
package main

import (
	"fmt"
	"os"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumiprovider "github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// version is the plugin version, the Python SDK's (pulumi_cloudflare 6.23.1) so that the engine
// loads this plugin for it; the build may set it with -ldflags "-X main.version=...".
var version = "6.23.1"

func main() {
	err := pulumiprovider.Main("cloudflare", func(*pulumiprovider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		return plugin.NewProviderServer(newProvider()), nil
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-resource-cloudflare: %v\n", err)
		os.Exit(1)
	}
}
