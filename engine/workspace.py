"""The real ``pulumi`` CLI on a throwaway local file backend: what the tests and the twin run as users do.

A :class:`Workspace` is a temporary directory holding a project (a copy of files you give it, or this
repository's program), its own ``PULUMI_HOME`` (plugins installed there with ``pulumi plugin install
... --file``) and a ``file://`` backend, so two workspaces never share state, plugins or locks. The
engine's binaries come from :func:`engine_bin` (what ``python -m engine.build`` built and recorded).

No test talks to Pulumi Cloud: ``PULUMI_SKIP_UPDATE_CHECK``, a passphrase secrets provider and the
file backend keep everything on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

PASSPHRASE = "bazbii-tests-only"
REPO_ROOT = Path(__file__).resolve().parent.parent
# What a checkout of the program needs to run (the rest of the repository is tests, tools and docs).
PROGRAM_FILES = ("__main__.py", "Pulumi.yaml", "Pulumi.prod.yaml", "requirements.txt")
PROGRAM_DIRS = ("components", "bazbii_plan", "bazbii_db", "bazbii_analysis", "migrations", "policies")


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self):
        return json.loads(self.stdout)


class PulumiError(AssertionError):
    """A ``pulumi`` command that was expected to succeed failed; the message carries its output."""


def engine_bin() -> Path:
    """The directory holding ``pulumi`` and the plugins' helpers (``BAZBII_ENGINE_BIN`` overrides)."""
    override = os.environ.get("BAZBII_ENGINE_BIN")
    if override:
        return Path(override)
    from engine.build import installed_bin  # the build records where it put the binaries

    return installed_bin()


def engine_plugins() -> Optional[Path]:
    """The ``plugins`` directory the build installed the provider plugins into (None with BAZBII_ENGINE_BIN)."""
    if os.environ.get("BAZBII_ENGINE_BIN"):
        return None
    from engine.build import installed

    return installed().plugins_home / "plugins"


@dataclass
class Workspace:
    root: Path
    project: Path
    home: Path
    backend: Path
    bin: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, files: Optional[Mapping[str, str]] = None, *, copy_from: Optional[Path] = None,
               bin_dir: Optional[Path] = None, prefix: str = "bazbii-pulumi-",
               parent: Optional[Path] = None) -> "Workspace":
        root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        project = root / "project"
        if copy_from is not None:
            shutil.copytree(copy_from, project, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", ".git", "venv", ".pytest_cache"))
        else:
            project.mkdir()
        for name, text in (files or {}).items():
            path = project / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (root / "home").mkdir()
        (root / "state").mkdir()
        plugins = engine_plugins() if bin_dir is None else None
        if plugins is not None and plugins.is_dir():
            # Each workspace has its own PULUMI_HOME (credentials, workspaces, locks); the built plugins are shared.
            (root / "home" / "plugins").symlink_to(plugins)
        return cls(root=root, project=project, home=root / "home", backend=root / "state",
                   bin=bin_dir or engine_bin())

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}",
            "PULUMI_HOME": str(self.home),
            "PULUMI_BACKEND_URL": f"file://{self.backend}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "1",
            "PULUMI_SKIP_CONFIRMATIONS": "1",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "1",
            "NO_COLOR": "1",
        })
        env.pop("PULUMI_ACCESS_TOKEN", None)
        env.update(self.extra_env)
        return env

    def run(self, *args: str, check: bool = True, stdin: Optional[str] = None, timeout: float = 600,
            cwd: Optional[Path] = None, prefix: Sequence[str] = ()) -> Result:
        argv = [*prefix, str(self.bin / "pulumi"), *args]
        done = subprocess.run(argv, cwd=cwd or self.project, env=self.env(), input=stdin, capture_output=True,
                              text=True, timeout=timeout)
        result = Result(argv, done.returncode, done.stdout, done.stderr)
        if check and done.returncode != 0:
            raise PulumiError(f"pulumi {' '.join(args)} exited {done.returncode}:\n{result.output[-6000:]}")
        return result

    # ------------------------------------------------------------------ conveniences
    def copy_program(self, repo: Path = REPO_ROOT) -> None:
        """The program as users check it out, sharing ``repo``'s virtualenv (Pulumi.yaml: ``virtualenv: venv``)."""
        for name in PROGRAM_FILES:
            shutil.copy(repo / name, self.project / name)
        for name in PROGRAM_DIRS:
            shutil.copytree(repo / name, self.project / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (self.project / "venv").symlink_to((repo / "venv").resolve())

    def login(self) -> None:
        self.run("login", f"file://{self.backend}")

    def install_plugin(self, kind: str, name: str, version: str, binary: Path) -> None:
        self.run("plugin", "install", kind, name, version, "--file", str(binary))

    def stack_init(self, stack: str) -> None:
        self.run("stack", "init", stack, "--non-interactive")

    def config_set(self, stack: str, key: str, value: str, *, secret: bool = False, path: bool = False) -> None:
        args = ["config", "set", "--stack", stack, key]
        args += ["--secret"] if secret else ["--plaintext"]
        args += ["--path"] if path else []
        # The value on stdin: never on the command line (secrets), and any text is taken as it is.
        self.run(*args, stdin=value)

    def export(self, stack: str) -> dict:
        return self.run("stack", "export", "--stack", stack, "--show-secrets").json()

    def import_state(self, stack: str, deployment: dict) -> None:
        path = self.root / f"import-{stack}.json"
        path.write_text(json.dumps(deployment))
        self.run("stack", "import", "--stack", stack, "--file", str(path))

    def outputs(self, stack: str) -> dict:
        return self.run("stack", "output", "--stack", stack, "--json", "--show-secrets").json()

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
