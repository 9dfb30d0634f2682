"""Server: one KonohaVPS machine, reached over SSH.

KonohaVPS has no API and no Pulumi provider, so creating or resizing a machine
is a manual console action. This component does not pretend otherwise: the
spec (vCPU, memory, disk, OS) is *declared* in config, and the
``<name>-spec-check`` command verifies over SSH that the machine really has it.
Its create/update fails with a message saying what to do in the console when
the machine does not match, which stops the update before anything that needs
the machine is touched: that is the manual gate for "create server3" and
"resize server1". The declared spec is part of the check's text, so changing the
spec in a step runs the check again (in place: see :func:`components._util.script`).

``<name>-provision`` then installs the base packages, the container runtime
(Docker from Ubuntu's archive) and cloudflared (Cloudflare's apt repository).
Role-specific software (PostgreSQL, PgBouncer, the gateway container) is
installed by the components that use it.

Assumptions: the SSH user has passwordless sudo; the key is the
``bazbii:sshPrivateKey`` secret. After a disk resize in the console the root
filesystem may still need ``growpart``/``resize2fs``: the spec check measures
the disk device, and prints a warning when the filesystem lags behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi_command import remote

from bazbii_plan import models
from components._util import TYPE_PREFIX, child_opts, inherit_depends_on, q, script

# Tolerances between the nominal console spec and what the kernel reports.
MEMORY_LOW, MEMORY_HIGH = 0.85, 1.05  # MemTotal excludes kernel-reserved memory
DISK_LOW, DISK_HIGH = 0.90, 1.10  # GB vs GiB and partition overhead


@dataclass(frozen=True)
class ServerArgs:
    server: models.Server
    ssh_private_key: pulumi.Input[str]


def spec_check_script(name: str, server: models.Server) -> str:
    """Read-only: compare nproc / MemTotal / disk size / OS with the declared spec; exit 1 on mismatch."""
    version = server.os.split("-", 1)[1]
    mem_low = int(server.memory_gb * MEMORY_LOW * 1024 * 1024)  # kB
    mem_high = int(server.memory_gb * MEMORY_HIGH * 1024 * 1024)
    disk_low = int(server.disk_gb * DISK_LOW * 1000**3)  # bytes
    disk_high = int(server.disk_gb * DISK_HIGH * 1024**3)
    declared = f"{server.vcpu} vCPU / {server.memory_gb} GB / {server.disk_gb} GB, {server.os}"
    return script(
        f"""
NAME={q(name)}
DECLARED={q(declared)}
problems=()
vcpu=$(nproc --all)
[ "$vcpu" -eq {server.vcpu} ] || problems+=("vcpu is $vcpu, declared {server.vcpu}")
mem_kb=$(awk '/^MemTotal:/ {{print $2}}' /proc/meminfo)
if [ "$mem_kb" -lt {mem_low} ] || [ "$mem_kb" -gt {mem_high} ]; then
  problems+=("memory is $((mem_kb / 1024)) MiB, declared {server.memory_gb} GB")
fi
# %.0f: with a plain print mawk (Ubuntu's awk) writes a sum past 2^31 as 1.07374e+11, which [ -lt ] refuses
disk_bytes=$(lsblk -b -d -n -e 7,11 -o SIZE | awk '{{s += $1}} END {{printf "%.0f\\n", s}}')
if [ "$disk_bytes" -lt {disk_low} ] || [ "$disk_bytes" -gt {disk_high} ]; then
  problems+=("disk is $((disk_bytes / 1000000000)) GB, declared {server.disk_gb} GB")
fi
# In a subshell: os-release sets NAME (and more), which would replace this script's NAME.
os_id=$(. /etc/os-release && echo "${{ID}}-${{VERSION_ID}}")
[ "$os_id" = {q("ubuntu-" + version)} ] || problems+=("OS is $os_id, declared {server.os}")
if [ "${{#problems[@]}}" -ne 0 ]; then
  echo "$NAME does not match its declared spec ($DECLARED):" >&2
  printf '  - %s\\n' "${{problems[@]}}" >&2
  echo "KonohaVPS has no API: create or resize $NAME in the KonohaVPS console to match, then run the update again." >&2
  exit 1
fi
root_bytes=$(df -B1 --output=size / | tail -n 1 | tr -d ' ')
if [ "$root_bytes" -lt $((disk_bytes * 8 / 10)) ]; then
  echo "warning: / is $((root_bytes / 1000000000)) GB of a $((disk_bytes / 1000000000)) GB disk; grow it (growpart, resize2fs)" >&2
fi
echo "$NAME matches $DECLARED"
"""
    )


PROVISION_STEPS = """
export DEBIAN_FRONTEND=noninteractive
sudo -n true  # the SSH user needs passwordless sudo
sudo apt-get update -q
sudo apt-get install -y -q ca-certificates curl gnupg lsb-release chrony
# container runtime
if ! command -v docker >/dev/null 2>&1; then
  sudo apt-get install -y -q docker.io
fi
sudo systemctl enable --now docker
# cloudflared, from Cloudflare's apt repository
if ! command -v cloudflared >/dev/null 2>&1; then
  sudo install -d -m 0755 /usr/share/keyrings
  curl -fsSL https://pkg.cloudflare.com/cloudflare-main.gpg | sudo tee /usr/share/keyrings/cloudflare-main.gpg >/dev/null
  echo "deb [signed-by=/usr/share/keyrings/cloudflare-main.gpg] https://pkg.cloudflare.com/cloudflared $(lsb_release -cs) main" \
    | sudo tee /etc/apt/sources.list.d/cloudflared.list >/dev/null
  sudo apt-get update -q
  sudo apt-get install -y -q cloudflared
fi
docker --version
cloudflared --version
"""


def provision_script(os_name: str) -> str:
    """Base packages, container runtime and cloudflared; its text names the OS, so a reinstalled OS runs it again."""
    return script(
        f"echo provisioning {q(os_name)}",
        PROVISION_STEPS,
    )


class Server(pulumi.ComponentResource):
    """A declared KonohaVPS machine: spec check (manual gate) then base provisioning over SSH."""

    connection: remote.ConnectionArgs
    address: str
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: ServerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}:Server", name, None, opts)
        inherit_depends_on(self, opts)
        server = args.server
        self.address = server.address
        self.connection = remote.ConnectionArgs(
            host=server.address,
            port=server.ssh_port,
            user=server.ssh_user,
            private_key=pulumi.Output.secret(args.ssh_private_key),
            dial_error_limit=5,
        )
        spec = {
            "vcpu": server.vcpu,
            "memoryGb": server.memory_gb,
            "diskGb": server.disk_gb,
            "os": server.os,
        }
        check = spec_check_script(name, server)
        self.spec_check = remote.Command(
            f"{name}-spec-check",
            connection=self.connection,
            create=check,
            update=check,
            opts=child_opts(self),
        )
        provision = provision_script(server.os)
        self.provision = remote.Command(
            f"{name}-provision",
            connection=self.connection,
            create=provision,
            update=provision,
            opts=child_opts(self, depends_on=[self.spec_check]),
        )
        self.ready = [self.provision]
        self.register_outputs({"address": server.address, "spec": spec, "roles": list(server.roles)})
