"""Read this stack's last applied record back, tolerating a stack that was never deployed."""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from bazbii_plan.record import is_record
from components.phase_gate import APPLIED_RECORD_OUTPUT


def self_reference_name() -> str:
    return f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"


def read_previous_record() -> tuple[pulumi.Output[Optional[dict[str, Any]]], pulumi.Output[str]]:
    """``(record or None, where it came from)``.

    A never-deployed stack has no ``appliedRecord`` output; anything that is
    not a well-formed record counts as unknown, and the gate then fails closed.
    """
    reference = pulumi.StackReference("applied-state", stack_name=self_reference_name())
    raw = reference.get_output(APPLIED_RECORD_OUTPUT)
    record = raw.apply(lambda value: value if is_record(value) else None)
    # Offline tools inject a reconstructed record and say where it came from ("base-file",
    # "plan-walk"); a record this program exported itself never carries an origin.
    source = raw.apply(
        lambda value: value.get("origin", "stack-output") if is_record(value)
        else ("malformed" if value is not None else "none")
    )
    return record, source
