package main

// command:remote:Command runs its command in one SSH session (dial.go makes the connection), as
// upstream:
//
//   - `environment` is passed as SSH "env" requests, which sshd refuses unless its AcceptEnv lets
//     the name through: a refused one fails the run (after an error naming the variable and
//     AcceptEnv), while a refused PULUMI_COMMAND_STDOUT/STDERR is only a warning. Nothing is
//     prefixed to the command line.
//   - `stdin`, when not empty, is the session's standard input; the command string is run by the
//     remote user's login shell (the "exec" request).
//   - Cancellation and customTimeouts stop the dialling, not a command already running (upstream
//     waits for the session to end either way).

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
)

func (in *remoteCommandInputs) run(
	ctx context.Context, command string, previous commandOutput, log engineLog,
) (commandOutput, error) {
	client, err := dialConnection(ctx, in.Connection, log)
	if err != nil {
		return commandOutput{}, err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return commandOutput{}, err
	}
	defer session.Close()

	names := make([]string, 0, len(in.Environment))
	for name := range in.Environment {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := session.Setenv(name, in.Environment[name]); err != nil {
			log.message(diag.Error, acceptEnvAdvice(name))
			return commandOutput{}, fmt.Errorf("could not set environment variable %q: %w", name, err)
		}
	}
	if addsPreviousOutput(in.AddPreviousOutputInEnv) {
		for _, variable := range previous.env() {
			if err := session.Setenv(variable[0], variable[1]); err != nil {
				log.message(diag.Warning, acceptEnvAdvice(variable[0]))
			}
		}
	}
	if in.Stdin != nil && *in.Stdin != "" {
		session.Stdin = strings.NewReader(*in.Stdin)
	}
	capture := newOutputCapture(in.Logging, log)
	session.Stdout = capture.stdoutWriter()
	session.Stderr = capture.stderrWriter()
	return capture.finish(session.Run(command), command)
}

func acceptEnvAdvice(name string) string {
	return fmt.Sprintf("Unable to set '%s'. This only works if your SSH server is configured to accept "+
		"these variables via AcceptEnv. Alternatively, if a Bash-like shell runs the command on the remote "+
		"host, you could prefix the command itself with the variables in the form 'VAR=value command'", name)
}
