package main

// command:local:Command runs its command on this machine, as upstream:
//
//   - under `interpreter` (default `/bin/sh -c`; `cmd /C` on Windows), the command its last argument;
//   - in `dir`, else in the plugin's working directory (the engine starts plugins in the project's
//     directory); a `dir` that does not exist fails the run;
//   - with the plugin's environment plus `environment` (and PULUMI_COMMAND_STDOUT/STDERR), a later
//     value of a name winning;
//   - with `stdin` (when not empty) as standard input;
//   - killed when the operation is cancelled or its customTimeout passes.

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
)

func (in *localCommandInputs) run(
	ctx context.Context, command string, previous commandOutput, log engineLog,
) (commandOutput, error) {
	argv := append([]string{}, in.Interpreter...)
	if len(argv) == 0 {
		argv = defaultInterpreter()
	}
	argv = append(argv, command)
	//nolint:gosec // running the user's command is what this resource is for
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)

	if in.Dir != nil {
		cmd.Dir = *in.Dir
	} else {
		dir, err := os.Getwd()
		if err != nil {
			return commandOutput{}, err
		}
		cmd.Dir = dir
	}
	cmd.Env = os.Environ()
	names := make([]string, 0, len(in.Environment))
	for name := range in.Environment {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		cmd.Env = append(cmd.Env, name+"="+in.Environment[name])
	}
	if addsPreviousOutput(in.AddPreviousOutputInEnv) {
		for _, variable := range previous.env() {
			cmd.Env = append(cmd.Env, variable[0]+"="+variable[1])
		}
	}
	if in.Stdin != nil && *in.Stdin != "" {
		cmd.Stdin = strings.NewReader(*in.Stdin)
	}
	capture := newOutputCapture(in.Logging, log)
	cmd.Stdout = capture.stdoutWriter()
	cmd.Stderr = capture.stderrWriter()
	return capture.finish(cmd.Run(), command)
}

func defaultInterpreter() []string {
	if runtime.GOOS == "windows" {
		return []string{"cmd", "/C"}
	}
	return []string{"/bin/sh", "-c"}
}
