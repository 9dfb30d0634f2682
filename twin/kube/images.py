"""The image table: which program a container runs. There is no container runtime and no image pull.

An image name (any registry prefix) is looked up here; its entry gives the program as an *entrypoint*
and default *arguments* (a Docker image's ENTRYPOINT and CMD), with the Kubernetes rules on top: a
container's ``command`` replaces both, its ``args`` replace the default arguments. ``python`` (or
``python3``) as the program means the project's interpreter (the venv the agent runs from), so a Job
running the api image with ``command: [python, -m, bazbii_db.migrations, ...]`` runs our CLI.

``…/bazbii/api:<version>``
    ``python -m uvicorn rehearsal.api_app:app --host <pod IP> --port <port> --no-access-log --loop uvloop
    --timeout-graceful-shutdown 10`` (as the rehearsal runs it), with ``BAZBII_API_VERSION=<version>``
    and ``BAZBII_API_INSTANCE=<pod name>``; with the agent's ``--fault-dir``, ``BAZBII_FAULT_FILE`` names
    :func:`fault_file` there: the share of requests the version answers 500 while the file says so (a
    fault the rehearsal injects into a running release, like a bad build; :mod:`rehearsal.api_app`)
``…/bazbii/worker:<version>``
    ``python -m rehearsal.worker``, with ``BAZBII_WORKER_VERSION=<version>``; when the container has a
    port, run by ``python -m twin.kube.health --listen <pod IP>:<port> --module rehearsal.worker``,
    which answers the probes the program gives every container on its port (that worker serves no
    HTTP): 200 to any GET while the process runs

``<port>`` is the container's first ``containerPort`` (also given as ``PORT``; ``HOST`` is the pod IP).

Database: the program gives its pods ``DATABASE_URL`` and ``DB_HOST``/``DB_PORT``/``DB_NAME``/
``DB_USER``/``DB_PASSWORD``; the rehearsal's API and worker read ``BAZBII_DSN``. For a bazbii image
without ``BAZBII_DSN`` in its env, ``BAZBII_DSN`` is ``DATABASE_URL`` when set, else the libpq
keyword string built from the ``DB_*`` variables that are set (:func:`bazbii_dsn`).

An image in no entry runs only with an explicit ``command``; without one the container waits with
``ErrImagePull`` (what a real node reports for an image it cannot get).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

_TAG = r"(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"
PYTHON_NAMES = ("python", "python3")


@dataclass(frozen=True)
class Launch:
    """What the pod gives an image to start with."""

    pod_name: str
    pod_ip: str
    port: Optional[int]
    fault_dir: Optional[str] = None  # the agent's --fault-dir


def fault_file(fault_dir: str, image: str, tag: str) -> str:
    """Where the share of requests that ``image`` (``api``) at ``tag`` fails is written, to inject a fault."""
    return f"{fault_dir}/{image}-{tag}"


@dataclass(frozen=True)
class ImageProgram:
    entrypoint: list[str]
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    wants_database: bool = False  # gets BAZBII_DSN mapped from the pod's database env


def _api(tag: str, launch: Launch) -> ImageProgram:
    port = launch.port or 8000
    return ImageProgram(
        ["python", "-m", "uvicorn"],
        ["rehearsal.api_app:app", "--host", launch.pod_ip, "--port", str(port), "--no-access-log",
         "--loop", "uvloop", "--timeout-graceful-shutdown", "10"],
        {"BAZBII_API_VERSION": tag, "BAZBII_API_INSTANCE": launch.pod_name,
         **({"BAZBII_FAULT_FILE": fault_file(launch.fault_dir, "api", tag)} if launch.fault_dir else {})},
        wants_database=True,
    )


def _worker(tag: str, launch: Launch) -> ImageProgram:
    env = {"BAZBII_WORKER_VERSION": tag}
    if launch.port is None:
        return ImageProgram(["python", "-m", "rehearsal.worker"], [], env, wants_database=True)
    return ImageProgram(["python", "-m", "twin.kube.health"],
                        ["--listen", f"{launch.pod_ip}:{launch.port}", "--module", "rehearsal.worker"], env,
                        wants_database=True)


IMAGE_TABLE: list[tuple[re.Pattern, Callable[[str, Launch], ImageProgram]]] = [
    (re.compile(rf"(?:^|/)bazbii/api:{_TAG}$"), _api),
    (re.compile(rf"(?:^|/)bazbii/worker:{_TAG}$"), _worker),
]


class ImageNotInTable(LookupError):
    pass


def program_for(image: str, launch: Launch) -> Optional[ImageProgram]:
    for pattern, entry in IMAGE_TABLE:
        match = pattern.search(image)
        if match:
            return entry(match.group("tag"), launch)
    return None


def bazbii_dsn(env: dict[str, str]) -> Optional[str]:
    """``BAZBII_DSN`` for the rehearsal's programs from the env the program's pods get."""
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"]
    keywords = {"host": "DB_HOST", "port": "DB_PORT", "dbname": "DB_NAME", "user": "DB_USER",
                "password": "DB_PASSWORD"}
    parts = [f"{key}='{_libpq_quote(env[name])}'" for key, name in keywords.items() if env.get(name)]
    return " ".join(parts) if "DB_HOST" in env else None


def _libpq_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def container_argv(container: dict, program: Optional[ImageProgram], python: str) -> list[str]:
    """The argv of a container (Kubernetes' command/args rules over the image's entrypoint/arguments)."""
    command, args = container.get("command"), container.get("args")
    if command:
        argv = list(command) + list(args or [])
    elif program is None:
        raise ImageNotInTable(f"image {container.get('image')!r} is in no entry of the twin's image table "
                              "(twin/kube/images.py) and the container gives no command")
    else:
        argv = program.entrypoint + (list(args) if args is not None else program.args)
    return [python if argv[0] in PYTHON_NAMES else argv[0], *argv[1:]]


def container_env(program: Optional[ImageProgram], spec_env: dict[str, str]) -> dict[str, str]:
    """The image's env under the container's own (which wins), plus ``BAZBII_DSN`` for bazbii images."""
    env = {**(program.env if program else {}), **spec_env}
    if program is not None and program.wants_database and "BAZBII_DSN" not in env:
        dsn = bazbii_dsn(env)
        if dsn:
            env["BAZBII_DSN"] = dsn
    return env
