"""The applied record: read the last one back, and register the next one last.

:func:`read_previous_record` reads this stack's own ``appliedRecord`` output
through a StackReference (during an update it returns the *previous* outputs;
a never-deployed stack has none).

:class:`AppliedRecord` is registered last and depends on every other resource,
so it is applied only once the whole step was. Its provider stamps the times
in ``create``/``update``, when the step is really applied, by comparing its old
outputs with the new target (:func:`bazbii_plan.record.stamp_record`): when each
track's step was applied, when a DNS TTL took its value and what it was before.
The next run reads them back; no time is ever a resource input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pulumi
from pulumi.dynamic import CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult
from pulumi.output import UNKNOWN

from bazbii_plan.facts import APPLIED_RECORD_OUTPUT
from bazbii_plan.record import JUDGED_BY, is_record, now_iso, stamp_record
from bazbii_plan.stackconfig import SELF_REFERENCE_KEY

RECORD_MARKER = "bazbii-applied-record"
STACK_REFERENCE_NAME = "applied-state"


def self_reference_name() -> str:
    """``organization/bazbii/prod``; ``bazbii:selfReference`` overrides it (legacy DIY layout: the bare ``prod``)."""
    configured = pulumi.Config("bazbii").get(SELF_REFERENCE_KEY)
    if configured:
        return configured
    return f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"


def read_previous_record() -> tuple[pulumi.Output[Optional[dict[str, Any]]], pulumi.Output[str]]:
    """``(record or None, where it came from)``.

    A never-deployed stack has no ``appliedRecord`` output; anything that is
    not a well-formed record counts as unknown, and the check then fails closed.
    """
    reference = pulumi.StackReference(STACK_REFERENCE_NAME, stack_name=self_reference_name())
    raw = reference.get_output(APPLIED_RECORD_OUTPUT)
    record = raw.apply(lambda value: value if is_record(value) else None)
    # Offline tools inject a reconstructed record and say where it came from ("base-file",
    # "plan-walk"); a record this program exported itself never carries an origin.
    source = raw.apply(
        lambda value: value.get("origin", "stack-output") if is_record(value)
        else ("malformed" if value is not None else "none")
    )
    return record, source


def _untimed(record: Any) -> Any:
    """A record without its stamped times: what decides whether anything changed."""
    if not isinstance(record, dict):
        return record
    history = {
        track: [{k: v for k, v in entry.items() if k != "appliedAt"} for entry in entries]
        for track, entries in (record.get("history") or {}).items()
    }
    return {"steps": record.get("steps"), "state": record.get("state"), "history": history,
            JUDGED_BY: record.get(JUDGED_BY)}


class AppliedRecordProvider(ResourceProvider):
    """Stores the record and stamps its times when it is applied (never in preview)."""

    def check(self, _olds: dict, news: dict) -> CheckResult:
        return CheckResult(news, [])

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        changed = _untimed(olds.get("applied")) != _untimed(news.get("applied"))
        return DiffResult(changes=changed, replaces=[], stables=["record"], delete_before_replace=False)

    def create(self, props: dict) -> CreateResult:
        # First update with a record resource: carry the times of the record the stack
        # exported before (e.g. by the old phase gate), if any.
        previous = props.get("previous") if is_record(props.get("previous")) else None
        return CreateResult(id_=RECORD_MARKER, outs=dict(props, applied=stamp_record(props["applied"], previous, now_iso())))

    def update(self, _id: str, olds: dict, news: dict) -> UpdateResult:
        previous = olds.get("applied") if is_record(olds.get("applied")) else news.get("previous")
        previous = previous if is_record(previous) else None
        return UpdateResult(outs=dict(news, applied=stamp_record(news["applied"], previous, now_iso())))


@dataclass(frozen=True)
class AppliedRecordArgs:
    target: dict[str, Any]  # bazbii_plan.record.target_record: no times
    previous: pulumi.Input[Optional[dict[str, Any]]]
    depends_on: Sequence[pulumi.Resource] = ()


class AppliedRecord(pulumi.dynamic.Resource):
    """The record this update leaves behind; :func:`exported_record` is what ``appliedRecord`` exports."""

    applied: pulumi.Output[dict]

    def __init__(self, name: str, args: AppliedRecordArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(
            AppliedRecordProvider(),
            name,
            {"record": RECORD_MARKER, "applied": args.target, "previous": args.previous},
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=list(args.depends_on))),
        )


def exported_record(record: AppliedRecord) -> pulumi.Output:
    """The ``appliedRecord`` stack output: the record with the times its provider stamps when the step is applied.

    A preview cannot know those times (a dynamic provider's ``update`` runs only in ``pulumi up``; a preview
    would show the target without them), so there it is unknown. The plan a ``pulumi preview --save-plan``
    writes then expects *some* record, and ``pulumi up --plan`` accepts the stamped one: a known, unstamped
    value in the plan made every ``up --plan`` fail its check of the stack's outputs.
    """
    if pulumi.runtime.is_dry_run():
        return record.applied.apply(lambda _record: UNKNOWN)
    return record.applied
