"""``apt-get`` on a twin server: nothing is installed, what the program asks for must already be here.

``install`` succeeds for packages installed on this machine (``scripts/bootstrap.sh`` puts the servers'
packages there) and for the ones the twin provides itself (``docker.io`` and ``cloudflared``: the twin's
own programs stand in for them); anything else fails as apt does for a package it cannot find, naming
it. ``update`` has nothing to fetch.
"""

from __future__ import annotations

import subprocess
import sys

PROGRAM = "apt-get"
# Packages the twin stands in for with its own programs (twin.hostshims.docker, .cloudflared).
PROVIDED_BY_THE_TWIN = {"docker.io", "cloudflared"}


def installed(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return done.returncode == 0 and "install ok installed" in done.stdout


def main(argv: list[str]) -> int:
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        print(f"{PROGRAM}: the twin's apt-get takes update or install", file=sys.stderr)
        return 100
    verb, packages = words[0], words[1:]
    if verb == "update":
        print("twin: the package lists are this machine's; nothing to fetch")
        return 0
    if verb != "install":
        print(f"E: the twin's apt-get does not {verb} (it installs nothing)", file=sys.stderr)
        return 100
    missing = [p for p in packages if p not in PROVIDED_BY_THE_TWIN and not installed(p.split("=", 1)[0])]
    if missing:
        for package in missing:
            print(f"E: Unable to locate package {package} (the twin installs nothing: add it to the "
                  "packages scripts/bootstrap.sh installs)", file=sys.stderr)
        return 100
    for package in packages:
        print(f"{package} is already the newest version (twin)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
