"""Kubernetes rules: rollouts that never take serving capacity away, and canaries that climb a ladder.

Resource rules read ``kubernetes:apps/v1:Deployment`` inputs (camelCase, as
registered). A Deployment *serves* when its labels say
``bazbii.io/serving: "true"`` (the API's stable and canary Deployments).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional

from bazbii_plan.facts import NAME_LABEL, SERVING_LABEL, TRACK_LABEL  # noqa: F401  (rules select on them)

from .common import Finding, Transition, dig, fmt, image_tag, next_rung, number



def _labels(props: Mapping[str, Any]) -> dict:
    labels = dict(dig(props, "metadata", "labels", default={}) or {})
    labels.update(dig(props, "spec", "template", "metadata", "labels", default={}) or {})
    return labels


def is_serving(props: Mapping[str, Any]) -> bool:
    return str(_labels(props).get(SERVING_LABEL, "")).lower() == "true"


def _name(props: Mapping[str, Any], fallback: str) -> str:
    return str(dig(props, "metadata", "name", default=None) or fallback)


def _containers(pod_spec: Mapping[str, Any], init: bool = False) -> list[dict]:
    out = list(pod_spec.get("containers") or [])
    if init:
        out += list(pod_spec.get("initContainers") or [])
    return out


def _pod_spec(props: Mapping[str, Any]) -> dict:
    return dict(dig(props, "spec", "template", "spec", default={}) or {})


def _is_zero(value: Any) -> bool:
    if number(value) is not None:
        return number(value) == 0
    return isinstance(value, str) and value.strip() in ("0", "0%")


def zero_unavailable(props: Mapping[str, Any], name: str) -> list[Finding]:
    """k8s-zero-unavailable: serving Deployments roll with maxUnavailable 0 (and a surge so they can progress)."""
    if not is_serving(props):
        return []
    name = _name(props, name)
    strategy = dig(props, "spec", "strategy", default={}) or {}
    kind = strategy.get("type", "RollingUpdate")
    if kind != "RollingUpdate":
        return [Finding(f"serving Deployment {name} uses strategy {kind!r}, which stops every pod at once",
                        "use strategy RollingUpdate with maxUnavailable 0 and maxSurge >= 1")]
    rolling = strategy.get("rollingUpdate") or {}
    out = []
    unavailable = rolling.get("maxUnavailable", "25%")  # Kubernetes' default when unset
    if not _is_zero(unavailable):
        out.append(Finding(
            f"serving Deployment {name} has rollingUpdate.maxUnavailable {fmt(unavailable)}: a rollout takes serving "
            "pods away before their replacements are ready",
            "set app.rollout.maxUnavailable: 0 (spec.strategy.rollingUpdate.maxUnavailable: 0)",
        ))
    surge = rolling.get("maxSurge", "25%")
    if _is_zero(surge):
        out.append(Finding(f"serving Deployment {name} has maxSurge 0 with maxUnavailable 0: the rollout cannot progress",
                           "set app.rollout.maxSurge to 1 or more"))
    return out


def readiness_probe(props: Mapping[str, Any], name: str) -> list[Finding]:
    """k8s-readiness-probe: every container of a serving Deployment has a readiness probe."""
    if not is_serving(props):
        return []
    name = _name(props, name)
    return [
        Finding(f"container {c.get('name')!r} of serving Deployment {name} has no readinessProbe: it gets traffic "
                "before it can serve", "add a readinessProbe (httpGet on app.rollout.readinessPath)")
        for c in _containers(_pod_spec(props)) if not c.get("readinessProbe")
    ]


def _prestop_seconds(container: Mapping[str, Any]) -> Optional[float]:
    """How long the preStop hook waits: ``sleep.seconds``, or ``exec: [..., "sleep N"]``; None if unknown/absent."""
    pre = dig(container, "lifecycle", "preStop", default=None)
    if not pre:
        return None
    seconds = number(dig(pre, "sleep", "seconds"))
    if seconds is not None:
        return seconds
    command = dig(pre, "exec", "command", default=[]) or []
    text = " ".join(str(c) for c in command)
    match = re.search(r"\bsleep\s+(\d+(?:\.\d+)?)\b", text)
    return float(match[1]) if match else 0.0


def graceful_shutdown(props: Mapping[str, Any], name: str, drain_seconds: float) -> list[Finding]:
    """k8s-graceful-shutdown: preStop waits >= drainSeconds and the grace period outlasts it."""
    if not is_serving(props):
        return []
    name = _name(props, name)
    pod = _pod_spec(props)
    grace = number(pod.get("terminationGracePeriodSeconds"))
    grace = 30.0 if grace is None else grace  # Kubernetes' default
    out = []
    for c in _containers(pod):
        wait = _prestop_seconds(c)
        if wait is None:
            out.append(Finding(
                f"container {c.get('name')!r} of serving Deployment {name} has no preStop hook: it stops while "
                "endpoints and the gateway still send it requests",
                f"add lifecycle.preStop that sleeps at least {fmt(drain_seconds)} s (app.rollout.drainSeconds)",
            ))
            continue
        if wait < drain_seconds:
            out.append(Finding(
                f"container {c.get('name')!r} of serving Deployment {name} drains {fmt(wait)} s in preStop, less than "
                f"the required {fmt(drain_seconds)} s",
                f"set app.rollout.drainSeconds to {fmt(drain_seconds)} or more",
            ))
        if grace <= max(wait, drain_seconds):
            out.append(Finding(
                f"serving Deployment {name} has terminationGracePeriodSeconds {fmt(grace)}, not more than its drain "
                f"time {fmt(max(wait, drain_seconds))} s: the pod is killed before it finishes in-flight requests",
                "set app.rollout.terminationGracePeriodSeconds above drainSeconds plus the longest request",
            ))
    return out


def revision_history(props: Mapping[str, Any], name: str, minimum: float) -> list[Finding]:
    """k8s-revision-history: keep enough ReplicaSets for ``kubectl rollout undo``."""
    limit = number(dig(props, "spec", "revisionHistoryLimit"))
    limit = 10.0 if limit is None else limit
    if limit >= minimum:
        return []
    return [Finding(f"Deployment {_name(props, name)} keeps {fmt(limit)} old ReplicaSets (revisionHistoryLimit), "
                    f"fewer than {fmt(minimum)}", f"set app.rollout.revisionHistoryLimit to {fmt(minimum)} or more")]


def _images(pod_spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(c.get("name")), str(c.get("image") or "")) for c in _containers(pod_spec, init=True)]


def _tag_problem(image: str) -> Optional[str]:
    if "@sha256:" in image:
        return None
    tag = image_tag(image)
    if tag is None:
        return "has no tag (it means latest)"
    if tag.lower() == "latest":
        return "uses the tag 'latest'"
    return None


def no_latest_tag(props: Mapping[str, Any], kind: str, name: str) -> list[Finding]:
    """k8s-no-latest-tag (Deployment, Job, ...): images are pinned to a version (or a digest)."""
    pod = dig(props, "spec", "jobTemplate", "spec", "template", "spec", default=None) or _pod_spec(props)
    out = []
    for container, image in _images(pod):
        problem = _tag_problem(image)
        if problem:
            out.append(Finding(f"{kind} {_name(props, name)} container {container!r} image {image!r} {problem}: "
                               "a rollback would not bring the old code back",
                               "pin the image to an explicit version tag (or a sha256 digest)"))
    return out


def state_images_pinned(t: Transition) -> list[Finding]:
    """k8s-no-latest-tag (gate): the images named in the target state are pinned too."""
    out = []
    state = t.target_state
    for where in ("app.api", "app.worker", "app.canary", "gateway"):
        image = dig(state, *where.split("."), "image")
        if image and _tag_problem(image):
            out.append(Finding(f"{where}.image {image!r} {_tag_problem(image)}",
                               "pin the image to an explicit version tag"))
    return out


def canary_ladder(t: Transition, ladder: list[int]) -> list[Finding]:
    """k8s-canary-ladder: app.canary.weight rises at most one rung per update.

    No canary counts as weight 0; a canary whose image changes starts again at 0
    (a new version may only appear at the first rung). A one-step rollback is exempt.
    """
    if t.previous is None or t.is_rollback:
        return []
    old = dig(t.previous_state, "app", "canary", default=None) or {}
    new = dig(t.target_state, "app", "canary", default=None) or {}
    if not new:
        return []
    new_weight = number(new.get("weight")) or 0.0
    old_weight = number(old.get("weight")) or 0.0
    fresh = not old or old.get("image") != new.get("image")
    if fresh:
        old_weight = 0.0
    rung = next_rung(ladder, old_weight)
    if new_weight <= old_weight or new_weight <= rung:
        return []
    what = (f"canary {new.get('image')} appears at weight {fmt(new_weight)}" if fresh
            else f"canary weight jumps {fmt(old_weight)} -> {fmt(new_weight)}")
    return [Finding(f"{what}, past the next rung {rung} of the canary ladder {ladder}",
                    f"set app.canary.weight to {rung} (or less) now and raise it in later steps")]


def pod_disruption_budgets(
    deployments: list[tuple[str, str, str, Mapping[str, Any], Optional[float]]],
    pdbs: list[tuple[str, str, Mapping[str, Any], Any, Any]],
) -> list[Finding]:
    """k8s-pod-disruption-budget (stack): each serving Deployment's pods are covered by a PDB that keeps some up.

    ``deployments``: (urn, name, namespace, pod labels, replicas) of serving Deployments.
    ``pdbs``: (name, namespace, selector.matchLabels, minAvailable, maxUnavailable).
    """
    out = []
    for urn, name, namespace, labels, replicas in deployments:
        if replicas is not None and replicas == 0:
            continue  # nothing to protect (e.g. the stable Deployment at canary 100 %)
        covering = [p for p in pdbs if p[1] == namespace and p[2]
                    and all(labels.get(k) == v for k, v in p[2].items())]
        if not covering:
            out.append(Finding(f"serving Deployment {name} has no PodDisruptionBudget selecting its pods: a node drain "
                               "may evict them all at once",
                               "add a PodDisruptionBudget (app.rollout.pdbMaxUnavailable) whose selector matches "
                               "the Deployment's pod labels", urn))
            continue
        for pdb_name, _ns, _sel, min_available, max_unavailable in covering:
            if (min_available is not None and _is_zero(min_available)) or \
                    (max_unavailable is not None and str(max_unavailable).strip() == "100%"):
                out.append(Finding(f"PodDisruptionBudget {pdb_name} for {name} allows every pod to be evicted",
                                   "set maxUnavailable: 1 (or minAvailable >= 1)", urn))
    return out
