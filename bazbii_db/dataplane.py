"""The data-plane commands as text: what runs **on the servers**, over SSH, for each step.

The apply job (a CI runner) reaches the servers only over SSH. Every action that talks to
PostgreSQL or to PgBouncer's admin console therefore runs on a server, through the project's
own CLIs installed there (``python -m bazbii_db.replication ...``, ``python -m bazbii_db.migrations
...``). This module builds those command lines; the ``PostgresCluster`` and ``SchemaRelease``
components hand them to ``pulumi_command.remote.Command`` and the SSH tests (``tests/ssh/``) run
the very same text against a local sshd. Pure functions, no Pulumi import.

Secrets (DSNs with passwords) never appear in a command line (visible in ``ps`` and in Pulumi's
state as plain inputs): the command reads them from **stdin**, one per line, into environment
variables of the CLI process (readable only by that user and root), and the caller passes
:func:`secrets_stdin` as the command's ``stdin`` (a Pulumi secret).

Every command prints one JSON document on stdout (``--json``) and exits 0 ok, 1 failed check
or operation (one line on stderr), 2 bad input: ``remote.Command`` fails the update on non-zero.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bazbii_plan.facts import STRICT_SHELL

# What the servers need from requirements.txt (the pins stay there, in one place).
SERVER_REQUIREMENTS = ("psycopg", "psycopg-pool", "pglast", "squawk-cli", "rich", "httpx", "pydantic")
# The directories of the repository that make up a release on the servers: the CLIs, what they share
# with the program (``bazbii_plan``: the facts and the typed plan, hence pydantic), the live-metric
# client the backfill's latency throttle reads (``bazbii_analysis``, over httpx) and the migrations.
RELEASE_DIRS = ("bazbii_db", "bazbii_plan", "bazbii_analysis", "migrations")
_SKIPPED_PARTS = {"__pycache__", ".pytest_cache"}


@dataclass(frozen=True)
class Runtime:
    """Where the project's code and virtualenv live on a server.

    Production: ``/opt/bazbii/app`` (a symlink to the current release) and ``/opt/bazbii/venv``.
    Tests point ``python`` and ``app_dir`` at the working tree and its virtualenv.
    """

    root: str = "/opt/bazbii"
    python: str = ""
    app_dir: str = ""

    @property
    def interpreter(self) -> str:
        return self.python or f"{self.root}/venv/bin/python"

    @property
    def code(self) -> str:
        return self.app_dir or f"{self.root}/app"

    @property
    def migrations_dir(self) -> str:
        return f"{self.code}/migrations"


DEFAULT_RUNTIME = Runtime()


# --------------------------------------------------------------------------- secrets over stdin
def secrets_stdin(values: Sequence[str]) -> str:
    """The ``stdin`` of a command built with ``secret_env``: one value per line, in order."""
    for value in values:
        if "\n" in value or "\r" in value:
            raise ValueError("a secret passed on stdin cannot contain a line break")
    return "".join(f"{value}\n" for value in values)


def _read_secrets(names: Sequence[str]) -> str:
    lines = []
    for name in names:
        if not name.isidentifier() or not name.isupper():
            raise ValueError(f"invalid environment variable name {name!r}")
        lines.append(f'IFS= read -r {name} || {{ echo "stdin ended before {name} (one secret per line)" >&2; '
                     f'exit 2; }}')
    if names:
        lines.append("export " + " ".join(names))
    return "\n".join(lines)


def cli_command(module: str, argv: Sequence[str], *, secret_env: Sequence[str] = (), as_root: bool = False,
                runtime: Runtime = DEFAULT_RUNTIME) -> str:
    """A shell command (for ``sh -c`` on the server) that reads ``secret_env`` from stdin and runs the CLI.

    ``as_root``: through ``sudo -n`` unless the SSH user already is root (the pooler's ini is
    owned by PgBouncer's service user, and the switchover replaces it).
    """
    if module not in ("bazbii_db.replication", "bazbii_db.migrations"):
        raise ValueError(f"unknown CLI module {module!r}")
    inner = "\n".join([
        STRICT_SHELL,
        "umask 077",
        _read_secrets(secret_env),
        f"export PYTHONPATH={shlex.quote(runtime.code)}",
        f"cd {shlex.quote(runtime.code)}",
        " ".join(["exec", shlex.quote(runtime.interpreter), "-m", module, *map(shlex.quote, argv)]),
    ])
    if not as_root:
        return f"bash -c {shlex.quote(inner)}"
    return f'S=; [ "$(id -u)" -eq 0 ] || S="sudo -n"; exec $S bash -c {shlex.quote(inner)}'


# --------------------------------------------------------------------------- the steps
LAG_GATE_SECRETS = ("BAZBII_PRIMARY_DSN", "BAZBII_REPLICA_DSN")
SWITCHOVER_SECRETS = ("BAZBII_OLD_PRIMARY_DSN", "BAZBII_NEW_PRIMARY_DSN", "BAZBII_PGBOUNCER_ADMIN_DSN")


def lag_gate_command(*, slot: str, max_lag_bytes: int, window_seconds: float, timeout_seconds: float,
                     check_consistency: bool, runtime: Runtime = DEFAULT_RUNTIME) -> str:
    """Lag gate (+ consistency check); stdin: primary DSN, replica DSN. Runs on the replica's host."""
    argv = ["--json", "gate", "--replica", slot, "--max-lag-bytes", str(int(max_lag_bytes)),
            "--window", f"{float(window_seconds):g}", "--timeout", f"{float(timeout_seconds):g}"]
    if check_consistency:
        argv.append("--check-consistency")
    return cli_command("bazbii_db.replication", argv, secret_env=LAG_GATE_SECRETS, runtime=runtime)


def switchover_command(*, ini_path: str, alias: str, new_host: str, new_port: int, pause_timeout_seconds: float,
                       max_lag_bytes: int, runtime: Runtime = DEFAULT_RUNTIME) -> str:
    """Planned switchover; stdin: old primary, new primary, PgBouncer admin DSNs. Runs on the pooler host,
    where the admin console (127.0.0.1) and the ini are local."""
    argv = ["--json", "switchover", "--ini", ini_path, "--alias", alias, "--new-host", new_host,
            "--new-port", str(int(new_port)), "--pause-timeout", f"{float(pause_timeout_seconds):g}",
            "--max-lag-bytes", str(int(max_lag_bytes))]
    return cli_command("bazbii_db.replication", argv, secret_env=SWITCHOVER_SECRETS, as_root=True, runtime=runtime)


def schema_secret_names(replicas: int) -> tuple[str, ...]:
    return ("DATABASE_URL", *(f"REPLICA_{i}_DSN" for i in range(1, replicas + 1)))


def schema_apply_command(*, migration_id: str, stage: str, expected_checksum: str, app_versions: Sequence[str],
                         replicas: int = 0, migrations_dir: str | None = None,
                         runtime: Runtime = DEFAULT_RUNTIME) -> str:
    """One stage through the migration runner; stdin: the app DSN, then each replica's DSN (lag throttle)."""
    secrets = schema_secret_names(replicas)
    argv = ["--migrations-dir", migrations_dir or runtime.migrations_dir, "--json", "apply",
            "--dsn-env", "DATABASE_URL", "--migration", migration_id, "--stage", stage,
            "--expected-checksum", expected_checksum]
    for version in app_versions:
        argv += ["--app-version", version]
    for name in secrets[1:]:
        argv += ["--replica-dsn-env", name]
    return cli_command("bazbii_db.migrations", argv, secret_env=secrets, runtime=runtime)


# --------------------------------------------------------------------------- installing the code
def server_requirements(requirements_txt: str) -> str:
    """The pinned lines of ``requirements.txt`` the servers need (psycopg, pglast, squawk, rich)."""
    wanted = []
    for line in requirements_txt.splitlines():
        spec = line.split("#", 1)[0].strip()
        name = spec.split("==", 1)[0].split("[", 1)[0].strip().lower()
        if spec and name in SERVER_REQUIREMENTS:
            if "==" not in spec:
                raise ValueError(f"requirements.txt: {spec!r} is not pinned")
            wanted.append(spec)
    missing = set(SERVER_REQUIREMENTS) - {w.split("==")[0].split("[")[0].lower() for w in wanted}
    if missing:
        raise ValueError(f"requirements.txt lacks {', '.join(sorted(missing))} (the servers need them)")
    return "\n".join(wanted) + "\n"


def release_files(repo: Path) -> dict[str, Path]:
    """``relative path -> file`` of a release (the CLIs and the migrations), caches left out."""
    files: dict[str, Path] = {}
    for top in RELEASE_DIRS:
        for path in sorted((repo / top).rglob("*")):
            if path.is_file() and not _SKIPPED_PARTS.intersection(path.parts) and path.suffix != ".pyc":
                files[str(path.relative_to(repo))] = path
    return files


def _release_entries(repo: Path) -> dict[str, bytes]:
    """``relative path -> bytes`` of a release: its files and the server's pinned requirements."""
    entries = {rel: path.read_bytes() for rel, path in release_files(repo).items()}
    entries["requirements.txt"] = server_requirements((repo / "requirements.txt").read_text()).encode()
    return entries


def _content_digest(entries: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(entries):
        if rel != "requirements.txt":
            digest.update(rel.encode() + b"\0" + entries[rel] + b"\0")
    digest.update(entries["requirements.txt"])
    return digest.hexdigest()[:16]


def release_digest(repo: Path) -> str:
    """Content digest of a release: the install re-runs exactly when the code, migrations or pins change."""
    return _content_digest(_release_entries(repo))


_TARBALLS: dict[str, bytes] = {}  # content digest -> tarball: each release is compressed once per process


def release_tarball(repo: Path) -> bytes:
    """A reproducible ``.tar.gz`` (sorted entries, fixed times and owners) of the release, built in memory:
    the same code gives the same bytes, so the upload only changes when the code does. Nothing is written
    to disk, so any number of evaluations of the program may build it at once. Kept by content digest: a
    plan walk evaluates the program dozens of times and compresses it once."""
    entries = _release_entries(repo)
    key = _content_digest(entries)
    if key not in _TARBALLS:
        _TARBALLS[key] = _tarball(entries)
    return _TARBALLS[key]


def _tarball(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buffer, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(entries):
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(entries[rel]), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(entries[rel]))
    return buffer.getvalue()


def release_stdin(tarball: bytes) -> str:
    """The install command's stdin: the release tarball, base64 (the SSH session carries it, no extra port)."""
    return base64.b64encode(tarball).decode("ascii") + "\n"


# The code needs Python 3.11 (tomllib); Ubuntu 22.04 ships it as the python3.11 package (universe).
SERVER_PYTHON = "python3.11"


def install_command(*, digest: str, runtime: Runtime = DEFAULT_RUNTIME, python: str = SERVER_PYTHON) -> str:
    """As root, with the release tarball on stdin (:func:`release_stdin`): check its digest, unpack it to
    ``<root>/releases/<digest>``, build/refresh the virtualenv from
    its pinned requirements (only when they changed), then switch ``<root>/app`` to it (atomic symlink swap)
    and check that it imports. Prints one JSON document."""
    inner = "\n".join([
        STRICT_SHELL,
        f"ROOT={shlex.quote(runtime.root)}",
        f"RELEASE={shlex.quote(f'{runtime.root}/releases/{digest}')}",
        'install -d -m 0755 "$ROOT" "$ROOT/releases"',
        'UPLOAD=$(mktemp "$ROOT/releases/.upload.XXXXXX")',
        'trap \'rm -f "$UPLOAD"\' EXIT',
        'base64 -d > "$UPLOAD" 2>/dev/null || { echo "release on stdin is not base64: nothing installed" >&2; exit 1; }',
        'if [ ! -d "$RELEASE" ]; then',
        '  rm -rf "$RELEASE.new"; install -d -m 0755 "$RELEASE.new"',
        '  tar -xzf "$UPLOAD" -C "$RELEASE.new" --no-same-owner 2>/dev/null '
        '|| { echo "release on stdin is not a tarball: nothing installed" >&2; rm -rf "$RELEASE.new"; exit 1; }',
        '  chmod -R go-w,a+rX "$RELEASE.new"',
        '  mv -T "$RELEASE.new" "$RELEASE"',
        "fi",
        'if [ ! -x "$ROOT/venv/bin/python" ]; then',
        f'  if ! {shlex.quote(python)} -c "import ensurepip, venv" >/dev/null 2>&1; then',
        f'    DEBIAN_FRONTEND=noninteractive apt-get install -y -q {shlex.quote(python)} {shlex.quote(python + "-venv")} '
        '>/dev/null || { echo "cannot install ' + python + ' (needed by the data-plane CLIs)" >&2; exit 1; }',
        "  fi",
        f'  {shlex.quote(python)} -m venv "$ROOT/venv"',
        "fi",
        'if ! cmp -s "$RELEASE/requirements.txt" "$ROOT/requirements.installed"; then',
        '  "$ROOT/venv/bin/pip" install --quiet --disable-pip-version-check -r "$RELEASE/requirements.txt"',
        '  cp "$RELEASE/requirements.txt" "$ROOT/requirements.installed"',
        "fi",
        'ln -sfn "$RELEASE" "$ROOT/app.new" && mv -T "$ROOT/app.new" "$ROOT/app"',
        'cd "$ROOT/app"',
        'PYTHONPATH="$ROOT/app" "$ROOT/venv/bin/python" -c "import bazbii_db.replication.__main__, '
        'bazbii_db.migrations.__main__" || { echo "installed release $RELEASE does not import" >&2; exit 1; }',
        'printf \'{"release": "%s", "app": "%s"}\\n\' "$RELEASE" "$ROOT/app"',
    ])
    return f'S=; [ "$(id -u)" -eq 0 ] || S="sudo -n"; exec $S bash -c {shlex.quote(inner)}'
