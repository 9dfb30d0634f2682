"""``nproc`` on a twin server: the vCPUs its VPS console declares (this machine has its own count)."""

import sys

from twin.hostshims.common import console_spec

if __name__ == "__main__":
    print(console_spec()["vcpu"])
    sys.exit(0)
