"""``lsblk`` on a twin server: one disk of the size its VPS console declares (GiB, as a VPS disk is sold).

Only the listing the program's spec check asks for is supported (``-b -d -n -e 7,11 -o SIZE``):
the twin has no block devices of its own to show.
"""

import sys

from twin.hostshims.common import console_spec, fail

SUPPORTED = {"-b", "-d", "-n", "-e", "7,11", "-o", "SIZE"}

if __name__ == "__main__":
    if not set(sys.argv[1:]) <= SUPPORTED:
        fail("lsblk", f"the twin's lsblk supports only {' '.join(sorted(SUPPORTED))}")
    print(int(console_spec()["diskGb"]) * 1024**3)
    sys.exit(0)
