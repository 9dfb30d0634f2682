// pulumi-language-python: the project's own Python language host.
//
// The Go module proxy this project builds from refuses
// github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 at every version, so the engine
// cannot be given the upstream host. This host implements the LanguageRuntime gRPC service the CLI
// calls, against the protocol of the github.com/pulumi/pulumi/sdk/v3 module the CLI is built with:
//
//   - Run starts the program the way the upstream host does: the SDK's own
//     pulumi-language-python-exec (installed next to this binary from the sdk/v3 module) under the
//     project's virtualenv, with the stack config in PULUMI_CONFIG / PULUMI_CONFIG_SECRET_KEYS;
//   - RunPlugin runs policy packs (`python -m pulumi.policy`) and Python plugins under the
//     virtualenv their own project file names;
//   - GetRequiredPackages lists the provider plugins the virtualenv's packages declare
//     (their pulumi-plugin.json), so the engine loads exactly those versions;
//   - InstallDependencies creates the virtualenv and installs requirements.txt.
//
// What it leaves out (codegen, templates, packing, linking, debugger attach) the CLI does not need
// for preview, up, destroy, refresh, import or policy packs; those calls answer Unimplemented.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	pbempty "google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// version is set by the build (engine/build.py) to the sdk/v3 version it was built against.
var version = "0.0.0-dev"

// The exit code the SDK's exec script uses after it already showed the user an actionable message.
const userActionableExitCode = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	engineAddress string
	execScript    string // pulumi-language-python-exec, next to this binary

	mu      sync.Mutex
	running map[*exec.Cmd]struct{} // programs and plugins started by Run/RunPlugin, for Cancel
}

func main() {
	engine := ""
	// The CLI passes flags (-tracing, -logflow, -v, ...) before the engine address, which comes last.
	for _, arg := range os.Args[1:] {
		if !strings.HasPrefix(arg, "-") {
			engine = arg
		}
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: cannot locate itself: %v\n", err)
		os.Exit(1)
	}
	h := &host{
		engineAddress: engine,
		execScript:    filepath.Join(filepath.Dir(self), "pulumi-language-python-exec"),
		running:       map[*exec.Cmd]struct{}{},
	}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
		os.Exit(1)
	}
	// The CLI reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------------------------------------- helpers

// option reads a runtime option (Pulumi.yaml `runtime.options`) as a string.
func option(options *structpb.Struct, name string) string {
	if options == nil {
		return ""
	}
	if value, ok := options.GetFields()[name]; ok {
		return value.GetStringValue()
	}
	return ""
}

// python is the interpreter for a project rooted at root: the virtualenv's when the project names
// one (relative paths are relative to the project root, as upstream), else python3 from PATH.
func python(root string, options *structpb.Struct) (interpreter string, virtualenv string, err error) {
	venv := option(options, "virtualenv")
	if toolchain := option(options, "toolchain"); toolchain != "" && toolchain != "pip" {
		return "", "", fmt.Errorf("runtime option toolchain=%q is not supported by this host (pip only)", toolchain)
	}
	if venv == "" {
		if cmd := os.Getenv("PULUMI_PYTHON_CMD"); cmd != "" {
			return cmd, "", nil
		}
		return "python3", "", nil
	}
	if !filepath.IsAbs(venv) {
		venv = filepath.Join(root, venv)
	}
	interpreter = filepath.Join(venv, "bin", "python")
	if _, statErr := os.Stat(interpreter); statErr != nil {
		return "", venv, fmt.Errorf("the virtualenv %s named in the project's runtime options has no bin/python; "+
			"create it (python3 -m venv %s) and install the requirements", venv, venv)
	}
	return interpreter, venv, nil
}

// withVirtualenv puts the virtualenv first on PATH, as activating it would.
func withVirtualenv(env []string, venv string) []string {
	if venv == "" {
		return env
	}
	out := make([]string, 0, len(env)+2)
	path := os.Getenv("PATH")
	for _, entry := range env {
		switch {
		case strings.HasPrefix(entry, "PATH="):
			path = strings.TrimPrefix(entry, "PATH=")
		case strings.HasPrefix(entry, "PYTHONHOME="), strings.HasPrefix(entry, "VIRTUAL_ENV="):
		default:
			out = append(out, entry)
		}
	}
	return append(out, "VIRTUAL_ENV="+venv, "PATH="+filepath.Join(venv, "bin")+string(os.PathListSeparator)+path)
}

func (h *host) track(cmd *exec.Cmd, add bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if add {
		h.running[cmd] = struct{}{}
	} else {
		delete(h.running, cmd)
	}
}

func exitCode(err error) (int, bool) {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), true
		}
		return exit.ExitCode(), true
	}
	return 0, false
}

// ---------------------------------------------------------------------------------------------- the service

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.engineAddress = req.GetEngineAddress()
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *pbempty.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// pluginManifest is the pulumi-plugin.json a provider SDK package ships.
type pluginManifest struct {
	Resource bool   `json:"resource"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Server   string `json:"server"`
}

// requiredPackages lists the resource plugins declared by the packages installed in the program's
// interpreter (what upstream learns from `pip list` plus each package's pulumi-plugin.json).
func requiredPackages(info *pulumirpc.ProgramInfo) ([]*pulumirpc.PackageDependency, error) {
	interpreter, _, err := python(info.GetRootDirectory(), info.GetOptions())
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(interpreter, "-c",
		"import json, site, sys; print(json.dumps(site.getsitepackages() + [site.getusersitepackages()]))").Output()
	if err != nil {
		return nil, fmt.Errorf("listing site-packages of %s: %w", interpreter, err)
	}
	var dirs []string
	if err := json.Unmarshal(out, &dirs); err != nil {
		return nil, fmt.Errorf("listing site-packages of %s: %w", interpreter, err)
	}
	seen := map[string]bool{}
	var deps []*pulumirpc.PackageDependency
	for _, dir := range dirs {
		manifests, _ := filepath.Glob(filepath.Join(dir, "*", "pulumi-plugin.json"))
		sort.Strings(manifests)
		for _, path := range manifests {
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			var m pluginManifest
			if err := json.Unmarshal(data, &m); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if !m.Resource || m.Name == "" {
				continue
			}
			if m.Version == "" {
				return nil, fmt.Errorf("%s declares plugin %q without a version", path, m.Name)
			}
			key := m.Name + "@" + m.Version
			if seen[key] {
				continue
			}
			seen[key] = true
			deps = append(deps, &pulumirpc.PackageDependency{
				Kind: "resource", Name: m.Name, Version: strings.TrimPrefix(m.Version, "v"), Server: m.Server,
			})
		}
	}
	return deps, nil
}

func (h *host) GetRequiredPackages(_ context.Context, req *pulumirpc.GetRequiredPackagesRequest) (*pulumirpc.GetRequiredPackagesResponse, error) {
	deps, err := requiredPackages(req.GetInfo())
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: deps}, nil
}

func (h *host) GetRequiredPlugins(_ context.Context, req *pulumirpc.GetRequiredPluginsRequest) (*pulumirpc.GetRequiredPluginsResponse, error) {
	deps, err := requiredPackages(req.GetInfo())
	if err != nil {
		return nil, err
	}
	plugins := make([]*pulumirpc.PluginDependency, 0, len(deps))
	for _, d := range deps {
		plugins = append(plugins, &pulumirpc.PluginDependency{Name: d.Name, Kind: d.Kind, Version: d.Version, Server: d.Server})
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: plugins}, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	root := info.GetRootDirectory()
	interpreter, venv, err := python(root, info.GetOptions())
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	if _, err := os.Stat(h.execScript); err != nil {
		return nil, fmt.Errorf("pulumi-language-python-exec is missing next to the language host: %w", err)
	}
	program := req.GetProgram()
	if entry := info.GetEntryPoint(); entry != "" && info.GetProgramDirectory() != "" {
		program = filepath.Join(info.GetProgramDirectory(), entry)
	}
	if program == "" {
		program = "."
	}
	args := []string{"-u", h.execScript,
		"--monitor", req.GetMonitorAddress(),
		"--engine", h.engineAddress,
		"--project", req.GetProject(),
		"--root_directory", root,
		"--stack", req.GetStack(),
		"--pwd", req.GetPwd(),
		"--dry_run", strconv.FormatBool(req.GetDryRun()),
		"--parallel", strconv.Itoa(int(req.GetParallel())),
		"--organization", req.GetOrganization(),
		program,
	}
	args = append(args, req.GetArgs()...)

	configMap := req.GetConfig()
	if configMap == nil {
		configMap = map[string]string{} // a stack with no config: "{}", which the SDK reads, never "null"
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secrets, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	env := withVirtualenv(os.Environ(), venv)
	env = append(env,
		"PULUMI_CONFIG="+string(config),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secrets),
		"PULUMI_PROJECT="+req.GetProject(),
		"PULUMI_STACK="+req.GetStack(),
		"PULUMI_ORGANIZATION="+req.GetOrganization(),
		"PULUMI_DRY_RUN="+strconv.FormatBool(req.GetDryRun()),
		"PULUMI_PARALLEL="+strconv.Itoa(int(req.GetParallel())),
		"PULUMI_MONITOR="+req.GetMonitorAddress(),
		"PULUMI_ENGINE="+h.engineAddress,
	)

	cmd := exec.Command(interpreter, args...)
	cmd.Dir = req.GetPwd()
	cmd.Env = env
	// The program's output goes where the CLI reads this host's output (it shows it as the program's).
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("starting %s: %v", interpreter, err)}, nil
	}
	h.track(cmd, true)
	err = cmd.Wait()
	h.track(cmd, false)
	if err == nil {
		return &pulumirpc.RunResponse{}, nil
	}
	if code, ok := exitCode(err); ok {
		if code == userActionableExitCode {
			return &pulumirpc.RunResponse{Bail: true}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program exited with non-zero exit code: %d", code)}, nil
	}
	return &pulumirpc.RunResponse{Error: err.Error()}, nil
}

// RunPlugin runs a plugin written in Python: a policy pack (kind "analyzer") through the SDK's
// `pulumi.policy` runner, any other plugin as its project directory's __main__.py.
func (h *host) RunPlugin(req *pulumirpc.RunPluginRequest, server grpc.ServerStreamingServer[pulumirpc.RunPluginResponse]) error {
	info := req.GetInfo()
	dir := info.GetProgramDirectory()
	if dir == "" {
		dir = req.GetProgram()
	}
	interpreter, venv, err := python(info.GetRootDirectory(), info.GetOptions())
	if err != nil {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	var args []string
	if req.GetKind() == "analyzer" {
		args = append([]string{"-u", "-m", "pulumi.policy"}, req.GetArgs()...)
		args = append(args, dir)
	} else {
		args = append([]string{"-u", dir}, req.GetArgs()...)
	}
	cmd := exec.Command(interpreter, args...)
	cmd.Dir = req.GetPwd()
	if cmd.Dir == "" {
		cmd.Dir = dir
	}
	cmd.Env = withVirtualenv(req.GetEnv(), venv)
	if len(req.GetEnv()) == 0 {
		cmd.Env = withVirtualenv(os.Environ(), venv)
	}

	var send sync.Mutex
	forward := func(r io.Reader, wrap func([]byte) *pulumirpc.RunPluginResponse, done *sync.WaitGroup) {
		defer done.Done()
		buf := make([]byte, 32*1024)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				chunk := append([]byte(nil), buf[:n]...)
				send.Lock()
				sendErr := server.Send(wrap(chunk))
				send.Unlock()
				if sendErr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return status.Errorf(codes.FailedPrecondition, "starting %s: %v", interpreter, err)
	}
	h.track(cmd, true)
	var streams sync.WaitGroup
	streams.Add(2)
	go forward(stdout, func(b []byte) *pulumirpc.RunPluginResponse {
		return &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: b}}
	}, &streams)
	go forward(stderr, func(b []byte) *pulumirpc.RunPluginResponse {
		return &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: b}}
	}, &streams)
	// The CLI cancels the stream to stop the plugin.
	go func() {
		<-server.Context().Done()
		if cmd.Process != nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
	}()
	streams.Wait()
	waitErr := cmd.Wait()
	h.track(cmd, false)
	code := 0
	if waitErr != nil {
		c, ok := exitCode(waitErr)
		if !ok {
			return waitErr
		}
		code = c
	}
	send.Lock()
	defer send.Unlock()
	return server.Send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(code)}})
}

// InstallDependencies creates the project's virtualenv and installs its requirements.txt.
func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest, server grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse]) error {
	info := req.GetInfo()
	root := info.GetRootDirectory()
	if root == "" {
		root = req.GetDirectory()
	}
	venv := option(info.GetOptions(), "virtualenv")
	if venv == "" {
		return status.Error(codes.FailedPrecondition, "the project names no virtualenv (runtime.options.virtualenv); nothing to install into")
	}
	if !filepath.IsAbs(venv) {
		venv = filepath.Join(root, venv)
	}
	stream := func(name string, args ...string) error {
		cmd := exec.Command(name, args...)
		cmd.Dir = root
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			return err
		}
		scanner := bufio.NewScanner(out)
		for scanner.Scan() {
			if err := server.Send(&pulumirpc.InstallDependenciesResponse{Stdout: append(scanner.Bytes(), '\n')}); err != nil {
				return err
			}
		}
		return cmd.Wait()
	}
	if _, err := os.Stat(filepath.Join(venv, "bin", "python")); err != nil {
		base := os.Getenv("PULUMI_PYTHON_CMD")
		if base == "" {
			base = "python3"
		}
		if err := stream(base, "-m", "venv", venv); err != nil {
			return fmt.Errorf("creating the virtualenv %s: %w", venv, err)
		}
	}
	requirements := filepath.Join(root, "requirements.txt")
	if _, err := os.Stat(requirements); err != nil {
		return nil
	}
	if err := stream(filepath.Join(venv, "bin", "python"), "-m", "pip", "install", "-q", "-r", requirements); err != nil {
		return fmt.Errorf("installing %s: %w", requirements, err)
	}
	return nil
}

func (h *host) About(context.Context, *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	out, err := exec.Command("python3", "--version").Output()
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: "python3",
		Version:    strings.TrimSpace(strings.TrimPrefix(string(out), "Python ")),
		Metadata:   map[string]string{"host": "bazbii pulumi-language-python " + version},
	}, nil
}

func (h *host) GetProgramDependencies(_ context.Context, req *pulumirpc.GetProgramDependenciesRequest) (*pulumirpc.GetProgramDependenciesResponse, error) {
	info := req.GetInfo()
	interpreter, _, err := python(info.GetRootDirectory(), info.GetOptions())
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(interpreter, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check").Output()
	if err != nil {
		return nil, fmt.Errorf("pip list: %w", err)
	}
	var listed []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	if err := json.Unmarshal(out, &listed); err != nil {
		return nil, fmt.Errorf("pip list: %w", err)
	}
	deps := make([]*pulumirpc.DependencyInfo, 0, len(listed))
	for _, d := range listed {
		deps = append(deps, &pulumirpc.DependencyInfo{Name: d.Name, Version: d.Version})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}

func (h *host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

// Cancel stops the programs and plugins this host started.
func (h *host) Cancel(context.Context, *pbempty.Empty) (*pbempty.Empty, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for cmd := range h.running {
		if cmd.Process != nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	return &pbempty.Empty{}, nil
}
