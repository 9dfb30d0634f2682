"""What a twin server's first process does inside its fresh mount namespace, before it becomes its sshd.

    nsenter --net=<server netns> unshare --mount --propagation private -- python -m twin.serverinit CONFIG

The server then looks like a freshly installed VPS, on this machine's own files:

* ``/etc``, ``/var``, ``/opt``, ``/home``, ``/usr/bin``, ``/usr/local/bin`` are overlays: the host's files
  underneath, every write going to the server's own directory (a package's config the program edits,
  the data-plane release in ``/opt/bazbii``, PostgreSQL's clusters);
* ``/run`` and ``/tmp`` are the server's own tmpfs (a boot's worth of runtime state);
* PostgreSQL starts with no cluster (the host's are hidden), PgBouncer with its package's defaults;
* the user ``deploy`` (the program's default SSH user) with passwordless sudo, key-only;
* the twin's host programs (:mod:`twin.hostshims`) stand where what cannot run here would be:
  ``systemctl`` (no systemd), ``apt-get`` (nothing is installed), ``docker`` (no container runtime),
  ``cloudflared``, and ``nproc``/``lsblk`` plus ``/proc/meminfo`` reporting the VPS console's spec;
* ``/etc/pip.conf`` points pip at the twin's wheelhouse (the servers have no route to PyPI);
* ``/etc/bazbii-twin`` is the console: its spec and where the edge services are (a live bind of the
  host-side directory, so a console resize shows at once).

Nothing here changes the host: every write lands under the server's directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

OVERLAID = ("/etc", "/var", "/opt", "/home", "/usr/bin", "/usr/local/bin")
FRESH_TMPFS = {"/run": "0755", "/tmp": "1777"}
REPO_ROOT = Path(__file__).resolve().parent.parent
# Where each twin program stands (ahead of the real one on PATH, or where a unit file names it) and its module.
SHIM_PLACES = {
    "/usr/bin/systemctl": "systemctl",
    "/usr/local/bin/apt-get": "aptget",
    "/usr/local/bin/docker": "docker",
    "/usr/bin/cloudflared": "cloudflared",
    "/usr/local/bin/nproc": "nproc",
    "/usr/local/bin/lsblk": "lsblk",
}
DEPLOY_USER = "deploy"


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"twin server init: mount {' '.join(args)}: {done.stderr.strip()}")


def _chown(path: str, user: str, group: str, mode: int) -> None:
    shutil.chown(path, user, group)
    os.chmod(path, mode)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def overlay(root: Path, keep_visible: list[str]) -> None:
    """Overlays, then the fresh tmpfs mounts; ``keep_visible`` host paths (the repository, the server's own
    directory) stay where they are inside the server even when they live under /tmp or /run."""
    for target in OVERLAID:
        name = target.strip("/").replace("/", "-")
        upper, work = root / "overlay" / name / "upper", root / "overlay" / name / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        _mount("-t", "overlay", "overlay", "-o", f"lowerdir={target},upperdir={upper},workdir={work}", target)
    outermost = [p for p in sorted(set(keep_visible)) if not any(_under(p, q) and p != q for q in keep_visible)]
    hidden = [p for p in outermost if any(_under(p, top) for top in FRESH_TMPFS)]
    staged = []
    for index, path in enumerate(hidden):  # held aside (in the server's /var) while the tmpfs covers them
        stage = f"/var/lib/bazbii-twin/keep/{index}"
        os.makedirs(stage, exist_ok=True)
        _mount("--bind", path, stage)
        staged.append((stage, path))
    for target, mode in FRESH_TMPFS.items():
        _mount("-t", "tmpfs", "-o", f"mode={mode},size=1g", f"twin-{target.strip('/')}", target)
    for stage, path in staged:
        os.makedirs(path, exist_ok=True)
        _mount("--move", stage, path)


def fresh_services() -> None:
    """PostgreSQL as a new install leaves it (no cluster), runtime dirs as a boot creates them."""
    for path in ("/etc/postgresql", "/var/lib/postgresql", "/var/log/postgresql"):
        if os.path.isdir(path):
            shutil.rmtree(path)  # a whiteout in the server's overlay; the host keeps its own
    os.makedirs("/etc/postgresql")
    _chown("/etc/postgresql", "postgres", "postgres", 0o755)
    os.makedirs("/var/lib/postgresql")
    _chown("/var/lib/postgresql", "postgres", "postgres", 0o755)
    os.makedirs("/var/log/postgresql")
    _chown("/var/log/postgresql", "root", "postgres", 0o1775)
    os.makedirs("/run/postgresql")
    _chown("/run/postgresql", "postgres", "postgres", 0o2775)
    os.makedirs("/run/sshd", mode=0o755)
    os.makedirs("/run/lock", mode=0o1777)


def console(root: Path) -> None:
    """The VPS console: spec files the host side keeps current, and the memory the kernel "reports"."""
    console_dir = root / "console"
    os.makedirs("/etc/bazbii-twin", exist_ok=True)
    _mount("--bind", str(console_dir), "/etc/bazbii-twin")
    _mount("--bind", str(console_dir / "meminfo"), "/proc/meminfo")
    spec = json.loads((console_dir / "console.json").read_text())
    os_id, _, version = spec["os"].partition("-")
    release = Path("/etc/os-release")
    if release.is_symlink() or release.exists():
        release.unlink()
    release.write_text(f'NAME="{os_id.capitalize()}"\nID={os_id}\nVERSION_ID="{version}"\n'
                       f'PRETTY_NAME="{os_id.capitalize()} {version} (bazbii twin)"\n')


def shims() -> None:
    """A launcher per program: the server's own Python runs the twin's module (standard library only)."""
    for place, module in SHIM_PLACES.items():
        target = Path(place)
        if target.exists() or target.is_symlink():
            target.unlink()
        target.write_text(f'#!/bin/sh\nPYTHONPATH={REPO_ROOT} exec /usr/bin/python3 -m twin.hostshims.{module} "$@"\n')
        target.chmod(0o755)


def deploy_user(authorized_keys: str) -> None:
    """``deploy``: key-only login (``*``: no password, not locked), passwordless sudo."""
    passwd = Path("/etc/passwd").read_text()
    if f"\n{DEPLOY_USER}:" not in "\n" + passwd:
        uid = 1500
        with open("/etc/group", "a") as group:
            group.write(f"{DEPLOY_USER}:x:{uid}:\n")
        with open("/etc/passwd", "a") as handle:
            handle.write(f"{DEPLOY_USER}:x:{uid}:{uid}:bazbii deploy:/home/{DEPLOY_USER}:/bin/bash\n")
        with open("/etc/shadow", "a") as shadow:
            shadow.write(f"{DEPLOY_USER}:*:19000:0:99999:7:::\n")
    home = Path("/home") / DEPLOY_USER
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "authorized_keys").write_text(authorized_keys)
    for path in (home, home / ".ssh", home / ".ssh" / "authorized_keys"):
        shutil.chown(path, DEPLOY_USER, DEPLOY_USER)
    os.chmod(home / ".ssh", 0o700)
    os.chmod(home / ".ssh" / "authorized_keys", 0o600)
    sudoers = Path("/etc/sudoers.d/bazbii-twin-deploy")
    sudoers.write_text(f"{DEPLOY_USER} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)


SESSIONS_LOG = "/var/log/bazbii-twin/sessions.log"
SESSION_PROGRAM = "/usr/local/bin/bazbii-twin-session"  # an overlaid directory: never the host's


def session_log() -> None:
    """sshd's ForceCommand: one line per SSH session (time, user, the command's start) in the server's log, then
    the command exactly as sshd would run it. The twin's marker of what reached the server; nothing else.

    A ForceCommand in sshd_config overrides the ``command=`` of the key that logged in, which production's
    sshd (without one) runs instead of the client's command (the metrics reader's key). So the key's own
    ``command=`` is looked up (sshd's ``ExposeAuthInfo`` names the key) and run in its place, the client's
    command left in ``SSH_ORIGINAL_COMMAND`` as sshd leaves it."""
    os.makedirs(os.path.dirname(SESSIONS_LOG), exist_ok=True)
    Path(SESSIONS_LOG).touch()
    os.chmod(SESSIONS_LOG, 0o622)  # every login appends; only root reads
    Path(SESSION_PROGRAM).write_text(
        "#!/bin/bash\n"
        "command=${SSH_ORIGINAL_COMMAND:-}\n"
        f"printf '%s\\t%s\\t%s\\n' \"$(date -u +%FT%T.%NZ)\" \"$(id -un)\" "
        f"\"$(printf %s \"$command\" | head -c 160 | tr '\\n\\t' '  ')\" >> {SESSIONS_LOG}\n"
        'blob=$(awk \'$1 == "publickey" {print $3; exit}\' "${SSH_USER_AUTH:-/dev/null}" 2>/dev/null)\n'
        'if [ -n "$blob" ]; then\n'
        '  line=$(grep -F " $blob" "$HOME/.ssh/authorized_keys" 2>/dev/null | head -n 1)\n'
        '  forced=$(printf %s "$line" | sed -n \'s/^\\([^ ]*,\\)\\{0,1\\}command="\\(\\([^"\\\\]\\|\\\\.\\)*\\)".*/\\2/p\' '
        '| sed \'s/\\\\"/"/g\')\n'
        '  if [ -n "$forced" ]; then exec /bin/bash -c "$forced"; fi\n'
        'fi\n'
        'if [ -z "$command" ]; then exec /bin/bash -l; fi\n'
        'exec /bin/bash -c "$command"\n')
    os.chmod(SESSION_PROGRAM, 0o755)


def pip_mirror(wheelhouse: str) -> None:
    Path("/etc/pip.conf").write_text(f"[global]\nno-index = true\nfind-links = {wheelhouse}\n")


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    root = Path(config["root"])
    overlay(root, config.get("keepVisible", []))
    fresh_services()
    console(root)
    shims()
    deploy_user(config["authorizedKeys"])
    session_log()
    if config.get("wheelhouse"):
        pip_mirror(config["wheelhouse"])
    sshd = config["sshd"]
    os.execv(sshd["binary"], [sshd["binary"], "-D", "-e", "-f", sshd["config"]])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m twin.serverinit CONFIG.json")
    main(sys.argv[1])
