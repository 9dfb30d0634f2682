"""Small helpers shared by the components (not a component itself)."""

from __future__ import annotations

import re
import shlex
from typing import Optional, Sequence

import pulumi

from bazbii_plan.facts import SCRIPT_SHEBANG, STRICT_SHELL

TYPE_PREFIX = "bazbii:index"

# Every remote script starts like this: stop on the first error, no unset variables.
SCRIPT_HEADER = f"{SCRIPT_SHEBANG}\n{STRICT_SHELL}\n"
# What a local.Command runs its script with: the provider's default is /bin/sh -c, which is dash on Debian and
# Ubuntu (GitHub's runners too) and stops at the header's `set -o pipefail` (the shebang is not read by `sh -c`).
LOCAL_INTERPRETER = ["/bin/bash", "-c"]
# Where a component keeps its own depends_on for its children (an attribute of ours, which the SDK's class lacks).
_INHERITED_DEPENDS_ON = "_inherited_depends_on"


def inherit_depends_on(component: pulumi.ComponentResource, opts: Optional[pulumi.ResourceOptions]) -> None:
    """Remember the component's own ``depends_on`` so that every child waits for it too.

    ``depends_on`` given to a ComponentResource is not passed on to its children by the SDK,
    so without this a child could be created before what its component was told to wait for.
    """
    deps = opts.depends_on if opts is not None else None
    inherited: list[object]
    if deps is None:
        inherited = []
    elif isinstance(deps, (list, tuple)):
        inherited = list(deps)
    else:
        inherited = [deps]
    setattr(component, _INHERITED_DEPENDS_ON, inherited)


def child_opts(
    parent: pulumi.Resource,
    depends_on: Optional[Sequence[pulumi.Resource]] = None,
    **kwargs,
) -> pulumi.ResourceOptions:
    """Options for a child: parented to ``parent``, its component's dependencies plus ``depends_on``."""
    inherited = getattr(parent, _INHERITED_DEPENDS_ON, [])
    return pulumi.ResourceOptions(parent=parent, depends_on=[*inherited, *(depends_on or [])], **kwargs)


def q(value: object) -> str:
    """Shell-quote one value for a generated script."""
    return shlex.quote(str(value))


def k8s_name(text: str) -> str:
    """A DNS-1123 label from arbitrary config text (``0002_add_category`` -> ``0002-add-category``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-")


def script(*parts: str) -> str:
    """Join script fragments under the strict-mode header.

    Why the program's commands carry no ``triggers``: what a command depends on is in its text (or its
    stdin), so a change runs its ``update`` in place. pulumi_command's SDK registers every Command with
    ``replace_on_changes=["triggers[*]"]``: a changed trigger *replaces* the resource, which runs the new
    ``create`` and then the old resource's ``delete`` (for the gateway, its stop script). Only the
    create-only switchover keeps triggers: a changed target there is a new switchover, as meant.
    """
    return SCRIPT_HEADER + "\n".join(p.strip("\n") for p in parts if p) + "\n"
