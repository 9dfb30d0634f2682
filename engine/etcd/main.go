// etcd for the twin's Kubernetes API server, built from go.etcd.io/etcd/server/v3 at the version
// engine/versions.toml pins (etcd's own main package lives in a module the proxy does not serve).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
