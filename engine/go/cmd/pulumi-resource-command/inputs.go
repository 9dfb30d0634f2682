package main

// The input shapes of pulumi-command 1.2.1's resources, as its schema and SDKs give them. These structs
// are the one description of the inputs: check.go derives validation, defaults and secret marking
// from their tags, and lifecycle.go decodes known inputs into them (with the SDK's mapper) to run a
// command.
//
// Tags: `pulumi:"name[,optional]"` (the mapper's), `secret:"true"` (the provider marks the value
// secret in Check), `default:"..."` (Check fills it in when absent), `enum:"Logging"` (a string enum
// whose upstream Go type Check's messages name). A struct's field order follows upstream's, embedded
// structs last, so failures come out in upstream's order.

// commandInputs are the inputs both resources take: upstream's common.ResourceInputs.
type commandInputs struct {
	Triggers []any   `pulumi:"triggers,optional"`
	Create   *string `pulumi:"create,optional"`
	Update   *string `pulumi:"update,optional"`
	Delete   *string `pulumi:"delete,optional"`
}

// remoteCommandInputs: command:remote:Command.
type remoteCommandInputs struct {
	Stdin                  *string           `pulumi:"stdin,optional"`
	Logging                *string           `pulumi:"logging,optional" enum:"Logging"`
	Connection             *connection       `pulumi:"connection" secret:"true"`
	Environment            map[string]string `pulumi:"environment,optional"`
	AddPreviousOutputInEnv *bool             `pulumi:"addPreviousOutputInEnv,optional"`
	commandInputs
}

// localCommandInputs: command:local:Command.
type localCommandInputs struct {
	Stdin                  *string           `pulumi:"stdin,optional"`
	Logging                *string           `pulumi:"logging,optional" enum:"Logging"`
	Interpreter            []string          `pulumi:"interpreter,optional"`
	Dir                    *string           `pulumi:"dir,optional"`
	Environment            map[string]string `pulumi:"environment,optional"`
	AssetPaths             []string          `pulumi:"assetPaths,optional" unsupported:"true"`
	ArchivePaths           []string          `pulumi:"archivePaths,optional" unsupported:"true"`
	AddPreviousOutputInEnv *bool             `pulumi:"addPreviousOutputInEnv,optional"`
	commandInputs
}

// sshEndpoint is what a connection and a bastion proxy share (upstream's connectionBase).
type sshEndpoint struct {
	User               *string  `pulumi:"user,optional" default:"root"`
	Password           *string  `pulumi:"password,optional" secret:"true"`
	Host               *string  `pulumi:"host"`
	Port               *float64 `pulumi:"port,optional" default:"22"`
	PrivateKey         *string  `pulumi:"privateKey,optional" secret:"true"`
	PrivateKeyPassword *string  `pulumi:"privateKeyPassword,optional" secret:"true"`
	AgentSocketPath    *string  `pulumi:"agentSocketPath,optional"`
	DialErrorLimit     *int     `pulumi:"dialErrorLimit,optional" default:"10"`
	PerDialTimeout     *int     `pulumi:"perDialTimeout,optional" default:"15"`
	HostKey            *string  `pulumi:"hostKey,optional"`
}

// connection: remote.Connection, the host a remote command runs on.
type connection struct {
	Proxy *proxyConnection `pulumi:"proxy,optional"`
	sshEndpoint
}

// proxyConnection: remote.ProxyConnection, a bastion host the connection is made through.
type proxyConnection struct {
	sshEndpoint
}

// Upstream's Go type names, which its (mapper's) failure messages name.
func (remoteCommandInputs) upstreamType() string { return "remote.CommandInputs" }
func (localCommandInputs) upstreamType() string  { return "local.CommandInputs" }
func (connection) upstreamType() string          { return "remote.Connection" }
func (proxyConnection) upstreamType() string     { return "remote.ProxyConnection" }

// The `logging` values: which of the command's streams are logged while it runs (both when unset).
// Upstream does not validate the value: an unknown one logs neither stream.
const (
	logStdout          = "stdout"
	logStderr          = "stderr"
	logStdoutAndStderr = "stdoutAndStderr"
)

func logsStdout(logging *string) bool {
	return logging == nil || *logging == logStdout || *logging == logStdoutAndStderr
}

func logsStderr(logging *string) bool {
	return logging == nil || *logging == logStderr || *logging == logStdoutAndStderr
}

// addsPreviousOutput: PULUMI_COMMAND_STDOUT/STDERR are set unless addPreviousOutputInEnv is false.
func addsPreviousOutput(flag *bool) bool { return flag == nil || *flag }
