"""Feature-flag rules: flags climb a ladder, go on only where every running version reads them, and their old
path goes away in the order front end -> API -> DB.

A flag (``flags.<name>`` in the state, :class:`bazbii_plan.models.Flag`) is on
for users whose ``id % 100`` is below its ``rollout``. Gate rules compare the
applied record's flags with the target's; everything they read is derived from
stack config, so they are known at preview and stay MANDATORY. The stack rule
checks that what the program registers carries the target flags to every pod.

Each policy's name, description and config live here beside its rule
(:data:`POLICY_SPECS`, :data:`CONFIG`); :mod:`policies.pack` wraps them.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any, Mapping, Optional

from bazbii_plan import flags as feature_flags
from bazbii_plan.facts import DEFAULT_FLAG_LADDER
from bazbii_plan.record import parse_time
from bazbii_plan.timegates import PLAN_WALK, duration
from bazbii_plan.transitions import judging_time_scale
from bazbii_plan.workloads import running_images

from ..builders import CONFIG_MAP, gate_of, gate_policy, ladder_schema, ladder_setting, stack_policy
from .common import Finding, Transition, dig, fmt, number, plain, rung_passed
from .schema import images_below


# --------------------------------------------------------------------------- policy names, descriptions, config
LADDER = "flags-rollout-ladder"
UNDERSTOOD = "flags-on-only-where-understood"
SOAK = "flags-old-path-after-soak"
CONTRACT = "flags-contract-after-old-path"
DELIVERED = "flags-reach-every-pod"

POLICY_SPECS: dict[str, str] = {
    LADDER: "A feature flag's rollout rises at most one rung of the ladder per update.",
    UNDERSTOOD: "A flag is on only while every running version (stable, canary, workers) reads it and the schema "
                "is at the point it needs.",
    SOAK: "A flag's old path is removed only after the flag held 100 % for its soak, and never while the flag "
          "could still send users to it.",
    CONTRACT: "A schema contract that removes what a flag's old path needs runs only with the flag at 100 %, its "
              "old path removed in an applied step and no version below the flag's minimum running.",
    DELIVERED: "Every Deployment reads the target flags from the flags ConfigMap and rolls when they change.",
}
CONFIG: dict[str, dict[str, Any]] = {
    "flagLadder": dict(ladder_schema(list(DEFAULT_FLAG_LADDER)),
                       description="rollout rungs of a feature flag in percent of users; 0 and 100 are always "
                                   "rungs, and at least one rung lies between them"),
}


# --------------------------------------------------------------------------- reading states
def _flags(state: Optional[Mapping[str, Any]]) -> dict[str, dict]:
    return dict(dig(state, "flags", default={}) or {})


def _rollout(flag: Optional[Mapping[str, Any]]) -> float:
    return (number(flag.get("rollout")) or 0.0) if flag else 0.0


def _old_path_removed(flag: Optional[Mapping[str, Any]]) -> bool:
    return bool(dig(flag, "oldPath", "removed", default=False)) if flag else False


def _running(t: Transition) -> list[tuple[str, str]]:
    """Images with pods in the applied state (they serve until replaced during this update) and in the target."""
    out = []
    if t.previous is not None:
        out += [(f"applied {where}", image) for where, image in running_images(dig(t.previous_state, "app"))]
    out += [(f"target {where}", image) for where, image in running_images(dig(t.target_state, "app"))]
    return out


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{fmt(round(hours, 1))} h"


# --------------------------------------------------------------------------- gate rules
def rollout_ladder(t: Transition, ladder: list[int]) -> list[Finding]:
    """flags-rollout-ladder: a flag's rollout rises at most to the next rung; a flag new to the state starts at 0.

    Lowering is free (it is how a flag is rolled back); a one-step rollback of
    any track restores a state already checked on the way up.
    """
    if t.previous is None or t.is_rollback:
        return []
    before, after = _flags(t.previous_state), _flags(t.target_state)
    out = []
    for name, flag in sorted(after.items()):
        old, new = _rollout(before.get(name)), _rollout(flag)
        rung = rung_passed(ladder, old, new)
        if rung is None:
            continue
        what = (f"flag {name!r} appears at rollout {fmt(new)} %" if name not in before
                else f"flag {name!r} rollout jumps {fmt(old)} -> {fmt(new)} %")
        out.append(Finding(
            f"{what}, past the next rung {rung} of the flag ladder {ladder}",
            f"set bazbii:flags.{name}.rollout to {rung} (or less) in this step and raise it in a later step, once this "
            "one has held its soak",
        ))
    return out


def on_only_where_understood(t: Transition) -> list[Finding]:
    """flags-on-only-where-understood: rollout > 0 needs every running version >= minAppVersion and the schema.

    Versions below the minimum do not read the flag: the cohort would get the
    new path from some pods and the old one from others. This also refuses a
    release rollback to an old version while a flag is on.
    """
    out = []
    for name, flag in sorted(_flags(t.target_state).items()):
        rollout = _rollout(flag)
        if rollout <= 0:
            continue
        required = str(flag.get("minAppVersion") or "")
        for where, image, why in images_below(_running(t), required):
            out.append(Finding(
                f"flag {name!r} is on for {fmt(rollout)} % of users while {where} runs {image} ({why}), which does "
                "not read the flag",
                f"keep bazbii:flags.{name}.rollout at 0 until the release track (bazbii:releasePhase) has every Deployment "
                f"(app.api, app.canary, app.worker) at {required} or later and it is applied; or lower the flag "
                "before rolling the release back",
            ))
        needs = flag.get("needsSchema")
        if needs and not feature_flags.schema_reached(t.target_state, needs):
            at = feature_flags.schema_point(t.target_state)
            shown = f"{at[0]} {feature_flags.SCHEMA_STAGES[at[1]]}" if at else "no migration"
            out.append(Finding(
                f"flag {name!r} is on for {fmt(rollout)} % of users but the schema is at {shown}, before "
                f"{needs.get('migration')} {needs.get('stage')} (flags.{name}.needsSchema)",
                f"keep bazbii:flags.{name}.rollout at 0 until bazbii:schemaPhase is at {needs.get('migration')} "
                f"{needs.get('stage')} or later; or lower the flag before rolling the schema back",
            ))
    return out


def _soak_problem(t: Transition, name: str, flag: Mapping[str, Any]) -> Optional[Finding]:
    """Why the applied flag has not (provably) held 100 % for its soak; None when it has. A rehearsal stack's
    time scale (``bazbii:timeScale``, from the applied record) divides the soak, as it divides the gates' soaks."""
    scale = judging_time_scale(t.previous, t.target)
    soak = (number(flag.get("soakHours")) or 0.0) * 3600 / scale
    span = partial(_span, scale=scale)
    applied = _flags(t.previous_state).get(name)
    what = f"flag {name!r} removes its old path ({dig(flag, 'oldPath', 'description', default='')})"
    if applied is None or _rollout(applied) < 100:
        return Finding(
            f"{what} but its applied rollout is {fmt(_rollout(applied))} %, not 100 %",
            f"raise bazbii:flags.{name}.rollout to 100 in its own step, apply it, let it hold bazbii:flags.{name}.soakHours "
            f"({span(soak)}), then set bazbii:flags.{name}.oldPath.removed: true",
        )
    if t.previous_source == PLAN_WALK:
        return None  # static plan walk: the order is right; times are checked against the real record
    timing = ((t.previous or {}).get("flagRollout") or {}).get(name) or {}
    since = None
    try:
        since = parse_time(timing.get("since")) if number(timing.get("rollout")) == 100 else None
    except (TypeError, ValueError):
        since = None
    if since is None:
        return Finding(
            f"{what}, but when it reached 100 % is not recorded (source {t.previous_source!r}), so its soak of "
            f"{span(soak)} cannot be shown to have passed",
            f"wait bazbii:flags.{name}.soakHours ({span(soak)}) after the 100 % step was applied; for an offline preview "
            "pass --base-age <how long ago the base was applied>",
        )
    elapsed = t.now - since
    if elapsed < timedelta(seconds=soak):
        left = timedelta(seconds=soak) - elapsed
        return Finding(
            f"{what} after only {span(elapsed.total_seconds())} at 100 %, less than its soak of {span(soak)}",
            f"wait another {span(left.total_seconds())} (until {(since + timedelta(seconds=soak)).isoformat()}) "
            f"and preview again; the soak is bazbii:flags.{name}.soakHours",
        )
    return None


def _span(seconds: float, scale: int) -> str:
    """A soak or a time at 100 % in words: hours, or at a rehearsal's time scale the scaled time itself."""
    return _hours(seconds) if scale == 1 else f"{duration(seconds)} (time scale 1/{scale})"


def old_path_after_soak(t: Transition) -> list[Finding]:
    """flags-old-path-after-soak: ``oldPath.removed`` turns true only after 100 % held for ``soakHours``.

    A flag whose old path is removed may not disappear from the state either:
    the app reads a missing flag as 0 %, which would send everyone to the
    removed path.
    """
    if t.previous is None:
        return []
    before, after = _flags(t.previous_state), _flags(t.target_state)
    out = []
    for name, flag in sorted(after.items()):
        if _old_path_removed(flag) and not _old_path_removed(before.get(name)):
            problem = _soak_problem(t, name, flag)
            if problem:
                out.append(problem)
    for name, flag in sorted(before.items()):
        if name not in after and _old_path_removed(flag):
            out.append(Finding(
                f"flag {name!r} is deleted although its old path was removed: the app reads a missing flag as 0 % "
                "and would send every user to a path that is gone",
                f"keep bazbii:flags.{name} (rollout 100, oldPath.removed: true) in the state",
            ))
    return out


def contract_after_old_path(t: Transition) -> list[Finding]:
    """flags-contract-after-old-path: front end -> API -> DB.

    When the target contracts the migration named by a flag's
    ``oldPath.droppedBy``, the flag is at 100 % (applied and target), no running
    version is below its ``minAppVersion`` (those always take the old path),
    and, when the contract starts in this update, the old path's removal was
    already applied.
    """
    migration = dict(dig(t.target_state, "schema", "migration", default={}) or {})
    if migration.get("stage") != "contract":
        return []
    applied_migration = dict(dig(t.previous_state, "schema", "migration", default={}) or {}) if t.previous else {}
    starts = (applied_migration.get("id"), applied_migration.get("stage")) != (migration.get("id"), "contract")
    before, after = _flags(t.previous_state), _flags(t.target_state)
    out = []
    for name in sorted(set(before) | set(after)):
        declared = after.get(name) or before.get(name)
        if dig(declared, "oldPath", "droppedBy") != migration.get("id"):
            continue
        what = (f"migration {migration.get('id')!r} contracts, which removes what flag {name!r}'s old path needs "
                f"({dig(declared, 'oldPath', 'description', default='')})")
        sides = [("target", after.get(name))] + ([("applied", before.get(name))] if t.previous is not None else [])
        for side, flag in sides:
            if _rollout(flag) < 100:
                out.append(Finding(
                    f"{what}, but the {side} rollout of the flag is {fmt(_rollout(flag))} %",
                    f"keep bazbii:flags.{name}.rollout at 100 while {migration.get('id')} is contracted; contract only after "
                    "the flag's 100 % step and its old-path removal are applied",
                ))
        removal_applied = _old_path_removed(before.get(name) if t.previous is not None else after.get(name))
        if starts and not removal_applied:
            out.append(Finding(
                f"{what}, but the flag's old path was not removed in an applied step (removal order: front end, "
                "then API, then DB)",
                f"apply a flags step that sets bazbii:flags.{name}.oldPath.removed: true (after its soak at 100 %), then move "
                "bazbii:schemaPhase to the contract",
            ))
        required = str(dig(declared, "minAppVersion", default="") or "")
        for where, image, why in images_below(_running(t), required):
            out.append(Finding(
                f"{what}, while {where} runs {image} ({why}), which does not read the flag and always takes the old path",
                f"finish the release track (bazbii:releasePhase: every Deployment at {required} or later, no canary "
                "on an older version), apply it, then contract",
            ))
    return out


# --------------------------------------------------------------------------- stack rule
def reach_every_pod(
    target_flags: Mapping[str, Any],
    config_maps: list[tuple[str, str, Mapping[str, Any]]],
    deployments: list[tuple[str, str, Mapping[str, Any]]],
) -> list[Finding]:
    """flags-reach-every-pod (stack): one flags ConfigMap holding the target flags; each Deployment reads it.

    ``config_maps``: ``(urn, name, data)`` of ConfigMaps labelled as the flags;
    ``deployments``: ``(urn, name, pod template)``. Reading it through the env
    var and carrying its checksum on the pod template is what makes a flag
    change roll the pods (see components.api_deployment).
    """
    document = feature_flags.flags_document(target_flags)
    expected_name = feature_flags.config_map_name(document)
    checksum = feature_flags.document_checksum(document)
    out = []
    matching = [c for c in config_maps if c[1] == expected_name and c[2].get(feature_flags.DOCUMENT_KEY) == document]
    if not matching:
        found = ", ".join(f"{n}" for _, n, _ in config_maps) or "none"
        out.append(Finding(
            f"no flags ConfigMap {expected_name} holds the target flags {document} (flags ConfigMaps: {found})",
            "set the flags only through bazbii:flags and the flags track (bazbii:flagsPhase), which the program "
            "declares as this ConfigMap; never edit the flags ConfigMap by hand",
        ))
    for urn, name, template in deployments:
        annotations = dict(dig(template, "metadata", "annotations", default={}) or {})
        if annotations.get(feature_flags.CHECKSUM_ANNOTATION) != checksum:
            out.append(Finding(
                f"Deployment {name}'s pod template carries flags checksum "
                f"{annotations.get(feature_flags.CHECKSUM_ANNOTATION)!r}, not {checksum[:12]}...: its pods would not "
                "roll to the new flags",
                f"let the program roll the pods: set the flags only through bazbii:flags and the flags track "
                f"(bazbii:flagsPhase), which stamps {feature_flags.CHECKSUM_ANNOTATION} on every pod template", urn,
            ))
        refs = []
        for container in dig(template, "spec", "containers", default=[]) or []:
            for var in container.get("env") or []:
                if var.get("name") == feature_flags.ENV_VAR:
                    refs.append(dig(var, "valueFrom", "configMapKeyRef", default={}) or {})
        containers = dig(template, "spec", "containers", default=[]) or []
        if len(refs) != len(containers) or any(
                r.get("name") != expected_name or r.get("key") != feature_flags.DOCUMENT_KEY for r in refs):
            out.append(Finding(
                f"Deployment {name} does not read {feature_flags.ENV_VAR} from {expected_name}/"
                f"{feature_flags.DOCUMENT_KEY} in every container",
                f"let the program declare the Deployments (bazbii:app with the flags track, bazbii:flagsPhase): each "
                f"container gets {feature_flags.ENV_VAR} from configMapKeyRef {expected_name} key "
                f"{feature_flags.DOCUMENT_KEY}", urn,
            ))
    return out


DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def reach_every_pod_in(resources: list, _config: Mapping[str, Any]) -> list[Finding]:
    """The stack policy's view: the gate's target flags, the labelled ConfigMaps, every Deployment's pod template."""
    gate = gate_of(resources)
    if gate is None:
        return []
    target_flags = _flags(gate.target_state)
    config_maps, deployments = [], []
    for r in resources:
        name = str(dig(r.props, "metadata", "name", default=r.name))
        if r.resource_type == CONFIG_MAP:
            labels = plain(dig(r.props, "metadata", "labels", default={}) or {})
            if labels.get(feature_flags.CONFIG_MAP_LABEL) == "true":
                config_maps.append((r.urn, name, plain(r.props.get("data") or {})))
        elif r.resource_type == DEPLOYMENT:
            deployments.append((r.urn, name, plain(dig(r.props, "spec", "template", default={}) or {})))
    return reach_every_pod(target_flags, config_maps, deployments)


# --------------------------------------------------------------------------- the policies
POLICIES = [
    gate_policy(LADDER, POLICY_SPECS[LADDER], lambda t, c: rollout_ladder(t, ladder_setting(c, CONFIG, "flagLadder")),
                CONFIG),
    gate_policy(UNDERSTOOD, POLICY_SPECS[UNDERSTOOD], lambda t, c: on_only_where_understood(t)),
    gate_policy(SOAK, POLICY_SPECS[SOAK], lambda t, c: old_path_after_soak(t)),
    gate_policy(CONTRACT, POLICY_SPECS[CONTRACT], lambda t, c: contract_after_old_path(t)),
    stack_policy(DELIVERED, POLICY_SPECS[DELIVERED], reach_every_pod_in,
                 preview_unknown="a stack policy reads resources' outputs, unknown for what a preview would create or "
                                 "change; the pod templates' flags are judged again at every up"),
]
