// One binary for the twin's Kubernetes control plane and kubectl, built from k8s.io/kubernetes at the
// version engine/versions.toml pins. It dispatches on the name it was started as (the build links
// kube-apiserver, kube-controller-manager, kube-scheduler and kubectl to it), or on its first argument.
// One binary links the shared Kubernetes packages once: a fraction of four separate builds' time and disk.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var commands = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": func() *cobra.Command { return controllermanager.NewControllerManagerCommand() },
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubectl":                 func() *cobra.Command { return kubectl.NewDefaultKubectlCommand() },
}

func main() {
	name, args := filepath.Base(os.Args[0]), os.Args[1:]
	if _, known := commands[name]; !known && len(args) > 0 {
		name, args = args[0], args[1:]
	}
	newCommand, known := commands[name]
	if !known {
		fmt.Fprintf(os.Stderr, "kube: unknown command %q (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)\n", name)
		os.Exit(2)
	}
	cmd := newCommand()
	cmd.SetArgs(args)
	os.Exit(cli.Run(cmd))
}
