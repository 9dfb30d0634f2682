"""Build the real Pulumi engine and the twin's Kubernetes from the Go module proxy, once per version.

    python -m engine.build            # build what is missing; says what it builds and how long each part took
    python -m engine.build --status   # what this checkout's build has, as JSON (nothing is built)

Every version comes from ``engine/versions.toml``. Each part is built once per version (and, for our own
sources, per content) into a cache outside the repository (``$BAZBII_ENGINE_CACHE``, default
``~/.cache/bazbii-engine``); a second run finds it there. Two runs at once take turns on a part (a lock
per part) and never write into each other's directories: a part is built in a fresh directory and moved
into place whole.

A part that cannot be fetched or built is named with its module and the error, the others are still
built, and the manifest records why; :func:`installed` then tells the tests which parts are missing
and why, and they are skipped with that reason (never silently). The exit status is 0 either way,
1 with ``--strict`` when a part is missing.

The parts:

=====================  ==========================================================================
``cli``                the ``pulumi`` CLI (github.com/pulumi/pulumi/pkg/v3 cmd/pulumi)
``plugins``            our own Go plugins (engine/go/cmd): the Python language host and the stand-in
                       command and Cloudflare providers (their upstream modules are refused here)
``kubernetes-provider`` pulumi-resource-kubernetes (github.com/pulumi/pulumi-kubernetes/provider/v4)
``kube``               kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (one binary)
``etcd``               etcd for that API server
=====================  ==========================================================================

Then a bin directory gathers the binaries, the SDK's own ``pulumi-language-python-exec`` and
``pulumi-resource-pulumi-python`` (from the sdk/v3 module) and our ``pulumi-analyzer-policy-python``,
and a plugin directory holds the provider plugins installed with ``pulumi plugin install resource NAME
VERSION --file``. No Pulumi import: this runs before anything else of the project.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

ENGINE_DIR = Path(__file__).resolve().parent
VERSIONS_FILE = ENGINE_DIR / "versions.toml"
GO_SOURCES = ENGINE_DIR / "go"
HEARTBEAT_SECONDS = 30.0

PULUMI_PKG = "github.com/pulumi/pulumi/pkg/v3"
PULUMI_SDK = "github.com/pulumi/pulumi/sdk/v3"
KUBERNETES = "k8s.io/kubernetes"
ETCD_SERVER = "go.etcd.io/etcd/server/v3"

# Our own Go plugins: binary -> (the versions.toml table whose plugin version it reports, plugin kind and
# name it is installed as, or None for the language host, which is found on PATH next to the CLI).
OWN_PLUGINS = {
    "pulumi-language-python": ("pulumi", None),
    "pulumi-resource-command": ("command-provider", ("resource", "command")),
    "pulumi-resource-cloudflare": ("cloudflare-provider", ("resource", "cloudflare")),
}


class EngineUnavailable(RuntimeError):
    """A part of the engine this checkout needs is not built; the message says which and why."""


# --------------------------------------------------------------------------------------- small helpers
def load_versions(path: Path = VERSIONS_FILE) -> dict:
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def cache_root() -> Path:
    configured = os.environ.get("BAZBII_ENGINE_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bazbii-engine"


def digest(*parts: object) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(repr(part).encode() + b"\0")
    return hasher.hexdigest()[:16]


def tree_digest(root: Path) -> str:
    """Content digest of a source tree (names and bytes)."""
    hasher = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        hasher.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return hasher.hexdigest()[:16]


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    # The machine's Go builds everything; no toolchain is downloaded. Module mode resolves what our
    # generated go.mod files leave open (their go.sum is written at build time).
    env.update({"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": env.get("CGO_ENABLED", "0")})
    return env


def go_version() -> str:
    go = shutil.which("go")
    if go is None:
        raise EngineUnavailable("go is not installed (Go 1.24 or later builds the engine)")
    return subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()


def human(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


class BuildFailed(RuntimeError):
    def __init__(self, module: str, message: str):
        super().__init__(f"{module}: {message}")
        self.module = module


def run_go(args: list[str], cwd: Path, log: Path, label: str, module: str,
           say: Callable[[str], None]) -> None:
    """One ``go`` command, its output in ``log``; a line every HEARTBEAT_SECONDS while it runs."""
    started = time.monotonic()
    with open(log, "a") as out:
        out.write(f"$ go {' '.join(args)}\n")
        out.flush()
        process = subprocess.Popen(["go", *args], cwd=cwd, env=go_env(), stdout=out, stderr=subprocess.STDOUT)
        next_beat = started + HEARTBEAT_SECONDS
        while process.poll() is None:
            time.sleep(0.5)
            if time.monotonic() >= next_beat:
                say(f"  ... still working on {label} ({human(time.monotonic() - started)})")
                next_beat += HEARTBEAT_SECONDS
    if process.returncode != 0:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        interesting = [line for line in lines if not line.startswith(("$ go", "go: downloading", "go: added"))]
        raise BuildFailed(module, " | ".join((interesting or lines)[-4:]) or f"go {args[0]} failed")


def module_dir(module: str, version: str, cwd: Path, log: Path, say: Callable[[str], None]) -> Path:
    """Where the Go module cache unpacked ``module@version`` (downloading it if needed)."""
    run_go(["mod", "download", f"{module}@{version}"], cwd, log, f"{module}@{version}", f"{module}@{version}", say)
    out = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=cwd, env=go_env(),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise BuildFailed(f"{module}@{version}", out.stdout.strip() or out.stderr.strip())
    return Path(json.loads(out.stdout)["Dir"])


def new_module(directory: Path, name: str, requires: dict[str, str], replaces: Optional[dict[str, str]] = None) -> None:
    lines = [f"module {name}", "", "go 1.24", "", "require ("]
    lines += [f"\t{module} {version}" for module, version in sorted(requires.items())]
    lines.append(")")
    if replaces:
        lines += ["", "replace ("]
        lines += [f"\t{module} => {target}" for module, target in sorted(replaces.items())]
        lines.append(")")
    (directory / "go.mod").write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------- the parts
@dataclass
class Context:
    versions: dict
    go: str
    cache: Path
    say: Callable[[str], None]

    @property
    def pulumi(self) -> str:
        return "v" + self.versions["pulumi"]["version"].lstrip("v")


@dataclass
class Part:
    name: str
    label: str  # what it is, for people
    module: str  # module@version it comes from, for error messages
    key: str
    outputs: tuple[str, ...]  # files the part must leave in its directory
    build: Callable[[Context, Path, Path], None]  # (context, output directory, log file)
    optional_outputs: tuple[str, ...] = ()

    def directory(self, cache: Path) -> Path:
        return cache / "parts" / f"{self.name}-{self.key}"


def _prepare_engine_module(ctx: Context, work: Path, log: Path) -> Path:
    """engine/go copied, with the pinned pulumi requirements: the CLI and our plugins build from it."""
    src = work / "src"
    shutil.copytree(GO_SOURCES, src)
    new_module(src, "bazbii.local/engine", {PULUMI_PKG: ctx.pulumi, PULUMI_SDK: ctx.pulumi})
    run_go(["mod", "tidy"], src, log, "resolving pulumi modules", f"{PULUMI_PKG}@{ctx.pulumi}", ctx.say)
    return src


def engine_go_module(work: Path, say: Callable[[str], None] = lambda line: None) -> Path:
    """The module our plugins are built from (``work/src``), as the build prepares it: for ``go test``."""
    ctx = Context(load_versions(), go_version(), cache_root(), say)
    log = work / "go.log"
    return _prepare_engine_module(ctx, work, log)


def build_cli(ctx: Context, out: Path, log: Path) -> None:
    src = _prepare_engine_module(ctx, out.parent, log)
    ldflags = f"-s -w -X {PULUMI_SDK}/go/common/version.Version={ctx.pulumi}"
    run_go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(out / "pulumi"), f"{PULUMI_PKG}/cmd/pulumi"],
           src, log, "the pulumi CLI", f"{PULUMI_PKG}@{ctx.pulumi}", ctx.say)


def build_own_plugins(ctx: Context, out: Path, log: Path) -> None:
    src = _prepare_engine_module(ctx, out.parent, log)
    for binary, (table, _install) in OWN_PLUGINS.items():
        if not (src / "cmd" / binary).is_dir():
            continue  # not written yet in this checkout; installed() reports it missing
        version = ctx.versions[table].get("plugin-version", ctx.versions[table].get("version", "")).lstrip("v")
        ldflags = f"-s -w -X main.version={version}"
        run_go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(out / binary), f"./cmd/{binary}"],
               src, log, binary, f"engine/go/cmd/{binary} (against {PULUMI_SDK}@{ctx.pulumi})", ctx.say)


def build_kubernetes_provider(ctx: Context, out: Path, log: Path) -> None:
    pin = ctx.versions["kubernetes-provider"]
    module, version, plugin_version = pin["module"], pin["version"], pin["plugin-version"]
    src = out.parent / "src"
    shutil.copytree(ENGINE_DIR / "kubernetes-provider", src)
    new_module(src, "bazbii.local/engine/kubernetes-provider", {module: version})
    upstream = module_dir(module, version, src, log, ctx.say) / "cmd" / "pulumi-resource-kubernetes"
    # What upstream's `go generate` writes: the schema with the plugin's version, both files compacted.
    schema = json.loads((upstream / "schema.json").read_text())
    schema["version"] = plugin_version
    (src / "schema-embed.json").write_text(json.dumps(schema, separators=(",", ":")))
    mapping = json.loads((upstream / "terraform-mapping.json").read_text())
    (src / "terraform-mapping-embed.json").write_text(json.dumps(mapping, separators=(",", ":")))
    run_go(["mod", "tidy"], src, log, "resolving the kubernetes provider's modules", f"{module}@{version}", ctx.say)
    ldflags = f"-s -w -X main.version={plugin_version}"
    run_go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(out / "pulumi-resource-kubernetes"), "."],
           src, log, "the kubernetes provider", f"{module}@{version}", ctx.say)


def staging_replaces(kubernetes_gomod: str, version: str) -> dict[str, str]:
    """k8s.io/kubernetes points its staging modules at ./staging; a dependent pins them at v0.<minor>.<patch>."""
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", kubernetes_gomod, re.M)))
    if not staging:
        raise BuildFailed(f"{KUBERNETES}@{version}", "its go.mod lists no staging modules to replace")
    staged_version = "v0." + version.lstrip("v").split(".", 1)[1]
    return {module: f"{module} {staged_version}" for module in staging}


def build_kube(ctx: Context, out: Path, log: Path) -> None:
    version = ctx.versions["kubernetes"]["version"]
    src = out.parent / "src"
    shutil.copytree(ENGINE_DIR / "kube", src)
    new_module(src, "bazbii.local/engine/kube", {KUBERNETES: version})
    upstream = module_dir(KUBERNETES, version, src, log, ctx.say)
    new_module(src, "bazbii.local/engine/kube", {KUBERNETES: version},
               staging_replaces((upstream / "go.mod").read_text(), version))
    run_go(["mod", "tidy"], src, log, "resolving the Kubernetes modules", f"{KUBERNETES}@{version}", ctx.say)
    major, minor = version.lstrip("v").split(".")[:2]
    ldflags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        ldflags += [f"-X {package}.gitVersion={version}", f"-X {package}.gitMajor={major}",
                    f"-X {package}.gitMinor={minor}", f"-X {package}.gitTreeState=clean",
                    f"-X {package}.buildDate=1970-01-01T00:00:00Z"]
    run_go(["build", "-trimpath", "-ldflags", " ".join(ldflags), "-o", str(out / "kube"), "."],
           src, log, "kube-apiserver, controller-manager, scheduler and kubectl", f"{KUBERNETES}@{version}", ctx.say)
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"):
        (out / name).symlink_to("kube")


def build_etcd(ctx: Context, out: Path, log: Path) -> None:
    version = ctx.versions["etcd"]["version"]
    src = out.parent / "src"
    shutil.copytree(ENGINE_DIR / "etcd", src)
    new_module(src, "bazbii.local/engine/etcd", {ETCD_SERVER: version})
    run_go(["mod", "tidy"], src, log, "resolving etcd's modules", f"{ETCD_SERVER}@{version}", ctx.say)
    run_go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), "."],
           src, log, "etcd", f"{ETCD_SERVER}@{version}", ctx.say)


def parts(versions: dict, go: str) -> list[Part]:
    pulumi = versions["pulumi"]["version"]
    k8sp = versions["kubernetes-provider"]
    own_sources = tree_digest(GO_SOURCES)
    return [
        Part("cli", f"pulumi CLI {pulumi}", f"{PULUMI_PKG}@v{pulumi}", digest("cli", pulumi, go),
             ("pulumi",), build_cli),
        Part("plugins", "our Python language host and stand-in command/Cloudflare providers",
             f"engine/go (against {PULUMI_SDK}@v{pulumi})",
             digest("plugins", pulumi, go, own_sources,
                    [versions[t].get("plugin-version") for t, _ in OWN_PLUGINS.values()]),
             ("pulumi-language-python",), build_own_plugins,
             optional_outputs=("pulumi-resource-command", "pulumi-resource-cloudflare")),
        Part("kubernetes-provider", f"kubernetes provider ({k8sp['version']}, as {k8sp['plugin-version']})",
             f"{k8sp['module']}@{k8sp['version']}",
             digest("kubernetes-provider", k8sp, go, tree_digest(ENGINE_DIR / "kubernetes-provider")),
             ("pulumi-resource-kubernetes",), build_kubernetes_provider),
        Part("kube", f"Kubernetes {versions['kubernetes']['version']} control plane and kubectl",
             f"{KUBERNETES}@{versions['kubernetes']['version']}",
             digest("kube", versions["kubernetes"], go, tree_digest(ENGINE_DIR / "kube")),
             ("kube", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler"), build_kube),
        Part("etcd", f"etcd {versions['etcd']['version']}", f"{ETCD_SERVER}@{versions['etcd']['version']}",
             digest("etcd", versions["etcd"], go, tree_digest(ENGINE_DIR / "etcd")), ("etcd",), build_etcd),
    ]


# --------------------------------------------------------------------------------------- building
@contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Outcome:
    ok: bool
    seconds: float = 0.0
    cached: bool = False
    error: str = ""
    missing: list[str] = field(default_factory=list)  # optional outputs this checkout does not build


def build_part(part: Part, ctx: Context) -> Outcome:
    target = part.directory(ctx.cache)
    stamp = target / ".built"
    with locked(ctx.cache / "locks" / f"{part.name}-{part.key}.lock"):
        if stamp.is_file():
            info = json.loads(stamp.read_text())
            ctx.say(f"engine: {part.label}: cached (built in {human(info['seconds'])})")
            return Outcome(True, info["seconds"], cached=True,
                           missing=[o for o in part.optional_outputs if not (target / o).exists()])
        ctx.say(f"engine: building {part.label} from {part.module} ...")
        work = Path(tempfile.mkdtemp(prefix=f"{part.name}-", dir=ctx.cache / "parts"))
        out = work / "out"
        out.mkdir()
        log = ctx.cache / "logs" / f"{part.name}-{part.key}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        started = time.monotonic()
        try:
            part.build(ctx, out, log)
            absent = [name for name in part.outputs if not (out / name).exists()]
            if absent:
                raise BuildFailed(part.module, f"the build left no {', '.join(absent)}")
        except (BuildFailed, OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            shutil.rmtree(work, ignore_errors=True)
            message = str(exc) if isinstance(exc, BuildFailed) else f"{part.module}: {exc}"
            ctx.say(f"engine: FAILED {part.label}: {message} (log: {log})")
            return Outcome(False, time.monotonic() - started, error=message)
        seconds = time.monotonic() - started
        (out / ".built").write_text(json.dumps({"seconds": round(seconds, 1), "module": part.module}))
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
        shutil.rmtree(work, ignore_errors=True)
        ctx.say(f"engine: built {part.label} in {human(seconds)}")
        return Outcome(True, seconds, missing=[o for o in part.optional_outputs if not (target / o).exists()])


def _link(source: Path, target: Path) -> None:
    """A hard link (the CLI finds its language host next to its own resolved path, so no symlink), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _sdk_python_dir(ctx: Context) -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="sdk-", dir=ctx.cache))
    try:
        new_module(scratch, "bazbii.local/engine/sdk", {PULUMI_SDK: ctx.pulumi})
        return module_dir(PULUMI_SDK, ctx.pulumi, scratch, scratch / "log", ctx.say) / "python"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def assemble(ctx: Context, built: dict[str, Part], outcomes: dict[str, Outcome], key: str) -> dict:
    """The bin directory (binaries and helper scripts) and the installed provider plugins."""
    bin_dir = ctx.cache / "bin" / key
    home = ctx.cache / "home" / key
    manifest_path = ctx.cache / f"manifest-{key}.json"
    with locked(ctx.cache / "locks" / f"assemble-{key}.lock"):
        staging = Path(tempfile.mkdtemp(prefix="bin-", dir=ctx.cache))
        for name, part in built.items():
            if not outcomes[name].ok:
                continue
            for entry in part.directory(ctx.cache).iterdir():
                # Provider plugins are installed (below), never put on PATH: the CLI would take a binary on
                # PATH over the installed plugin, whatever version the program asks for.
                if not entry.name.startswith((".", "pulumi-resource-")):
                    _link(entry.resolve(), staging / entry.name)
        problems: dict[str, str] = {}
        if outcomes["cli"].ok:
            try:
                sdk_python = _sdk_python_dir(ctx)
                for script in (sdk_python / "cmd" / "pulumi-language-python-exec",
                               sdk_python / "dist" / "pulumi-resource-pulumi-python"):
                    shutil.copy(script, staging / script.name)
                    (staging / script.name).chmod(0o755)
            except BuildFailed as exc:
                problems["sdk-scripts"] = str(exc)
        analyzer = ENGINE_DIR / "scripts" / "pulumi-analyzer-policy-python"
        shutil.copy(analyzer, staging / analyzer.name)
        (staging / analyzer.name).chmod(0o755)
        if bin_dir.exists():
            shutil.rmtree(bin_dir)
        bin_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(bin_dir)

        plugins = _install_plugins(ctx, built, bin_dir, home, problems)
        manifest = {
            "key": key,
            "bin": str(bin_dir),
            "pluginsHome": str(home),
            "plugins": plugins,
            "parts": {name: {"ok": o.ok, "seconds": round(o.seconds, 1), "cached": o.cached, "error": o.error,
                             "missing": o.missing, "module": built[name].module, "label": built[name].label}
                      for name, o in outcomes.items()},
            "problems": problems,
        }
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.replace(manifest_path)
        return manifest


def _install_plugins(ctx: Context, built: dict[str, Part], bin_dir: Path, home: Path,
                     problems: dict[str, str]) -> dict[str, str]:
    """``pulumi plugin install resource NAME VERSION --file`` into this build's plugin home."""
    wanted = {"kubernetes": ("pulumi-resource-kubernetes", ctx.versions["kubernetes-provider"]["plugin-version"])}
    for binary, (table, install) in OWN_PLUGINS.items():
        if install is not None:
            wanted[install[1]] = (binary, ctx.versions[table]["plugin-version"])
    installed: dict[str, str] = {}
    pulumi = bin_dir / "pulumi"
    if not pulumi.exists():
        return installed
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PULUMI_HOME=str(home), PULUMI_SKIP_UPDATE_CHECK="1")
    for name, (binary, version) in sorted(wanted.items()):
        source = next((p.directory(ctx.cache) / binary for p in built.values()
                       if (p.directory(ctx.cache) / binary).is_file()), None)
        if source is None:
            continue
        plugin_dir = home / "plugins" / f"resource-{name}-v{version}"
        if (plugin_dir / binary).exists():
            installed[name] = version
            continue
        done = subprocess.run([str(pulumi), "plugin", "install", "resource", name, version, "--file", str(source)],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            problems[f"plugin {name}"] = (done.stderr or done.stdout).strip()[-500:]
            ctx.say(f"engine: FAILED installing the {name} plugin {version}: {problems[f'plugin {name}']}")
            continue
        installed[name] = version
        ctx.say(f"engine: installed the {name} plugin {version}")
    return installed


def combined_key(all_parts: list[Part]) -> str:
    return digest([(p.name, p.key) for p in all_parts], tree_digest(ENGINE_DIR / "scripts"))


def build(say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> dict:
    versions = load_versions()
    cache = cache_root()
    (cache / "parts").mkdir(parents=True, exist_ok=True)
    try:
        go = go_version()
    except (EngineUnavailable, subprocess.CalledProcessError) as exc:
        say(f"engine: cannot build anything: {exc}")
        return {"parts": {}, "problems": {"go": str(exc)}}
    ctx = Context(versions, go, cache, say)
    all_parts = parts(versions, go)
    started = time.monotonic()
    outcomes = {part.name: build_part(part, ctx) for part in all_parts}
    manifest = assemble(ctx, {p.name: p for p in all_parts}, outcomes, combined_key(all_parts))
    say(f"engine: ready in {human(time.monotonic() - started)}: {manifest['bin']}")
    return manifest


# --------------------------------------------------------------------------------------- what the tests read
@dataclass(frozen=True)
class Installed:
    bin: Path
    plugins_home: Path
    parts: dict
    plugins: dict

    def need(self, *names: str) -> None:
        """Raise EngineUnavailable naming each missing part or plugin (the tests skip with that reason)."""
        reasons = []
        for name in names:
            if name in self.parts:
                info = self.parts[name]
                if not info["ok"]:
                    reasons.append(f"{info['label']} was not built: {info['error']}")
            elif name in ("command", "cloudflare", "kubernetes"):
                if name not in self.plugins:
                    reasons.append(f"the {name} provider plugin is not installed (this checkout's build has none)")
            else:
                raise KeyError(name)
        if reasons:
            raise EngineUnavailable("; ".join(reasons))


def installed() -> Installed:
    """What ``python -m engine.build`` built for this checkout's versions and sources."""
    versions = load_versions()
    try:
        go = go_version()
    except (EngineUnavailable, subprocess.CalledProcessError) as exc:
        raise EngineUnavailable(str(exc)) from None
    key = combined_key(parts(versions, go))
    manifest_path = cache_root() / f"manifest-{key}.json"
    if not manifest_path.is_file():
        raise EngineUnavailable(f"the engine is not built for this checkout (no {manifest_path}); "
                                "run scripts/bootstrap.sh --with-engine")
    manifest = json.loads(manifest_path.read_text())
    return Installed(Path(manifest["bin"]), Path(manifest["pluginsHome"]), manifest["parts"], manifest["plugins"])


def installed_bin() -> Path:
    return installed().bin


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--status", action="store_true", help="print what is built for this checkout (JSON); build nothing")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any part could not be built")
    args = parser.parse_args(argv)
    if args.status:
        try:
            found = installed()
        except EngineUnavailable as exc:
            print(json.dumps({"built": False, "reason": str(exc)}, indent=2))
            return 1
        print(json.dumps({"built": True, "bin": str(found.bin), "pluginsHome": str(found.plugins_home),
                          "parts": found.parts, "plugins": found.plugins}, indent=2))
        return 0
    manifest = build()
    failed = [name for name, info in manifest.get("parts", {}).items() if not info["ok"]] or \
        ([] if manifest.get("parts") else ["go"])
    return 1 if (args.strict and (failed or manifest.get("problems"))) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
