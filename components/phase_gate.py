"""The phase gate, split in two: a check registered first, a record registered last.

Under the real engine a resource is registered only after everything it
depends on was *applied* (pulumi-engine-ordering.md). The gate of earlier
versions depended on every other resource, so its check and every gate policy
ran only after the load balancer, DNS, Deployments, switchover and migration
Job had already changed. Now:

* :class:`components.transition_check.TransitionCheck` is registered first and
  :func:`guard_everything_after` makes every later resource of the stack depend
  on it (children of components included: the SDK does not hand a component's
  ``depends_on`` to its children, a stack transformation reaches each of them);
* :class:`components.applied_record.AppliedRecord` is registered last, depends on
  everything, stamps the applied times and is exported as ``appliedRecord``.

Existing stacks: the check takes over the old ``phase-gate`` resource through an
alias (same type, updated in place), and :class:`PhaseGateProvider` stays
importable here because the engine unpickles a dynamic resource's provider from
its *old* state for a delete (a renamed class would break it).
"""

from __future__ import annotations

from typing import Any

import pulumi

from components.applied_record import APPLIED_RECORD_OUTPUT
from components.transition_check import GATE_MARKER, TransitionCheck, TransitionCheckProvider

OLD_GATE_NAME = "phase-gate"
STACK_REFERENCE_TYPE = "pulumi:pulumi:StackReference"

__all__ = ["APPLIED_RECORD_OUTPUT", "GATE_MARKER", "OLD_GATE_NAME", "PhaseGateProvider", "guard_everything_after"]


class PhaseGateProvider(TransitionCheckProvider):
    """Shim: the provider class pickled into the state of the old ``phase-gate`` resource."""


def guard_everything_after(check: TransitionCheck) -> None:
    """Every resource constructed from now on depends on ``check`` (a stack transformation).

    The transformation runs in the SDK at construction, so it also holds under the
    mocks of the offline harness. The self StackReference is exempt (the check reads
    it, a dependency would be a cycle); it is constructed before the check anyway.
    """

    def transform(args: pulumi.ResourceTransformationArgs) -> Any:
        if args.resource is check or args.type_ == STACK_REFERENCE_TYPE:
            return None
        return pulumi.ResourceTransformationResult(
            args.props, pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(depends_on=[check]))
        )

    pulumi.runtime.register_stack_transformation(transform)
