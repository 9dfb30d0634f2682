"""Pod volumes: files in the pod's directory, shown at each container's ``mountPath`` in its own mount namespace.

Supported volume types: ``configMap`` and ``secret`` (``items`` with ``path``/``mode``, ``defaultMode``,
``optional``), ``projected`` with configMap/secret sources, ``emptyDir`` and ``hostPath`` (an existing
path). Files are written once, when the pod starts: a later change of the ConfigMap is not
propagated (the program's ConfigMaps are immutable anyway). Other types (downwardAPI,
serviceAccountToken, persistent volumes, ...) leave the pod waiting with a reason.

A container with volume mounts runs under ``unshare --mount --propagation private``: a small shell
bind-mounts each source on its ``mountPath`` (read-only for configMap/secret/projected and for
``readOnly`` mounts) and execs the program, so only that process tree sees the mounts. A
``mountPath`` missing on this machine is created first (the bind needs a mount point) by
:class:`MountPoints`, which removes what it created once no pod of this agent uses it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

from twin.kube.objects import Fetch, PodSetupError, source_data

MOUNT_ERROR = "ContainerCreating"  # the kubelet keeps a pod there (with a FailedMount event) until it can mount
READ_ONLY_TYPES = ("configMap", "secret", "projected")


@dataclass(frozen=True)
class Mount:
    source: Path
    target: Path
    read_only: bool


def _relative(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise PodSetupError(MOUNT_ERROR, f"volume path {path!r} must be relative and stay inside the volume")
    return relative


def _write_files(target: Path, data: dict[str, bytes], items: Optional[list], default_mode: int,
                 what: str, optional: bool) -> None:
    chosen = items if items else [{"key": key, "path": key} for key in sorted(data)]
    for item in chosen:
        if item["key"] not in data:
            if optional:
                continue
            raise PodSetupError(MOUNT_ERROR, f"{what}: no key {item['key']!r}")
        path = target / _relative(item["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[item["key"]])
        path.chmod(item.get("mode", default_mode))


async def _write_source(fetch: Fetch, namespace: str, target: Path, source: dict, resource: str,
                        default_mode: int) -> None:
    name = source.get("name") or source.get("secretName")
    optional = bool(source.get("optional"))
    data = await source_data(fetch, resource, namespace, name, optional=optional, reason=MOUNT_ERROR)
    _write_files(target, data or {}, source.get("items"), source.get("defaultMode", default_mode),
                 f"{resource[:-1]} {namespace}/{name}", optional)


async def materialize(fetch: Fetch, pod: dict, directory: Path) -> dict[str, Path]:
    """Write every volume of ``pod`` under ``directory``; volume name -> its source directory."""
    namespace = pod["metadata"]["namespace"]
    sources: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        target = directory / name
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            await _write_source(fetch, namespace, target, volume["configMap"], "configmaps", 0o644)
        elif "secret" in volume:
            await _write_source(fetch, namespace, target, volume["secret"], "secrets", 0o644)
        elif "projected" in volume:
            projected = volume["projected"]
            for source in projected.get("sources") or []:
                kinds = [kind for kind in ("configMap", "secret") if kind in source]
                if not kinds:
                    raise PodSetupError(MOUNT_ERROR, f"volume {name}: projected source {', '.join(source)} "
                                                     "is not supported by the twin's node agent")
                await _write_source(fetch, namespace, target, source[kinds[0]], kinds[0].lower() + "s",
                                    projected.get("defaultMode", 0o644))
        elif "hostPath" in volume:
            host = Path(volume["hostPath"]["path"])
            if not host.exists():
                raise PodSetupError(MOUNT_ERROR, f"volume {name}: hostPath {host} does not exist")
            target.rmdir()
            target = host
        elif "emptyDir" not in volume:
            kind = next((key for key in volume if key != "name"), "?")
            raise PodSetupError(MOUNT_ERROR, f"volume {name}: type {kind} is not supported by the twin's node agent")
        sources[name] = target
    return sources


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def container_mounts(pod: dict, container: dict, sources: dict[str, Path]) -> list[Mount]:
    types = {volume["name"]: next((k for k in volume if k != "name"), "") for volume in pod["spec"].get("volumes") or []}
    mounts = []
    for mount in container.get("volumeMounts") or []:
        name = mount["name"]
        if name not in sources:
            raise PodSetupError(MOUNT_ERROR, f"volumeMount {name}: no such volume")
        source = sources[name] / _relative(mount["subPath"]) if mount.get("subPath") else sources[name]
        if not source.exists():
            raise PodSetupError(MOUNT_ERROR, f"volumeMount {name}: subPath {mount['subPath']!r} does not exist")
        mounts.append(Mount(source, Path(mount["mountPath"]),
                            bool(mount.get("readOnly")) or types.get(name) in READ_ONLY_TYPES))
    return mounts


def in_mount_namespace(argv: list[str], mounts: list[Mount]) -> list[str]:
    """``argv`` run in a new private mount namespace with ``mounts`` bound (unchanged when there are none)."""
    if not mounts:
        return argv
    lines, params = ["set -e"], []
    for mount in mounts:
        params += [str(mount.source), str(mount.target)]
        source, target = f'"${{{len(params) - 1}}}"', f'"${{{len(params)}}}"'
        lines.append(f"mount --bind {source} {target}")
        if mount.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    lines += [f"shift {len(params)}", 'exec "$@"']
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(lines), "sh",
            *params, *argv]


class MountPoints:
    """Mount points this agent had to create on the machine, counted per user, removed when unused."""

    def __init__(self) -> None:
        self._users: dict[Path, int] = {}

    def acquire(self, mount: Mount) -> None:
        missing = []
        path = mount.target
        while not path.exists():
            missing.append(path)
            path = path.parent
        for created in reversed(missing):  # parents first
            if created == mount.target and mount.source.is_file():
                created.touch()
            else:
                created.mkdir()
        for path in [mount.target, *mount.target.parents]:
            if path in missing or path in self._users:
                self._users[path] = self._users.get(path, 0) + 1

    def release(self, mount: Mount) -> None:
        for path in [mount.target, *mount.target.parents]:  # deepest first
            if path not in self._users:
                continue
            self._users[path] -= 1
            if self._users[path] == 0:
                del self._users[path]
                try:
                    path.unlink() if path.is_file() else path.rmdir()
                except OSError:  # not empty any more (someone else wrote there): leave it
                    pass
