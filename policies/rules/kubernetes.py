"""Kubernetes rules: rollouts that never take serving capacity away, and canaries that climb a ladder.

Resource rules read ``kubernetes:apps/v1:Deployment`` inputs (camelCase, as
registered). A Deployment *serves* when its labels say
``bazbii.io/serving: "true"`` (the API's stable and canary Deployments).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

from bazbii_plan import rollout
from bazbii_plan.errors import config_key
from bazbii_plan.facts import DEFAULT_CANARY_LADDER, PINNED_FORMAT, SERVING_LABEL, pin_problem
from bazbii_plan.scope import changed_paths, outside

from ..builders import CRON_JOB, DAEMON_SET, DEPLOYMENT, JOB, PDB, STATEFUL_SET, gate_policy, ladder_schema, \
    ladder_setting, number_setting, resource_label, resource_policy, stack_policy
from .common import Finding, Transition, dig, fmt, number, plain, rung_passed
from .keys import step_changes_key
from .traffic import goes_back

# Where each Deployment's image is configured (the migration Job runs the API image).
IMAGE_KEYS = {"api": "bazbii:app.api.image", "api-canary": "bazbii:app.canary.image",
              "worker": "bazbii:app.worker.image"}


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


def zero_unavailable(props: Mapping[str, Any], name: str) -> list[Finding]:
    """k8s-zero-unavailable: serving Deployments roll with maxUnavailable 0 (and a surge so they can progress)."""
    if not is_serving(props):
        return []
    name = _name(props, name)
    strategy = dig(props, "spec", "strategy", default={}) or {}
    kind = strategy.get("type", "RollingUpdate")
    if kind != "RollingUpdate":
        return [Finding(f"serving Deployment {name} uses strategy {kind!r}, which stops every pod at once",
                        f"remove the strategy override so the program's RollingUpdate applies, with "
                        f"{rollout.key('maxUnavailable')}: 0 and {rollout.key('maxSurge')} >= 1")]
    rolling = strategy.get("rollingUpdate") or {}
    unavailable = rolling.get("maxUnavailable", rollout.KUBERNETES_DEFAULTS["maxUnavailable"])
    surge = rolling.get("maxSurge", rollout.KUBERNETES_DEFAULTS["maxSurge"])
    shown = {"maxUnavailable": unavailable, "maxSurge": surge}
    return [Finding(f"serving Deployment {name} has rollingUpdate.{p.key} {fmt(shown[p.key])}: {p.why}", p.fix)
            for p in rollout.surge_problems(surge, unavailable)]


def readiness_probe(props: Mapping[str, Any], name: str) -> list[Finding]:
    """k8s-readiness-probe: every container of a serving Deployment has a readiness probe."""
    if not is_serving(props):
        return []
    name = _name(props, name)
    return [
        Finding(f"container {c.get('name')!r} of serving Deployment {name} has no readinessProbe: it gets traffic "
                "before it can serve", f"set {rollout.key('readinessPath')} (the program adds an httpGet readinessProbe on it) "
                "and do not replace the container's probes")
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
    grace = float(rollout.KUBERNETES_DEFAULTS["terminationGracePeriodSeconds"]) if grace is None else grace
    out = []
    for c in _containers(pod):
        wait = _prestop_seconds(c)
        if wait is None:
            out.append(Finding(
                f"container {c.get('name')!r} of serving Deployment {name} has no preStop hook: it stops while "
                "endpoints and the gateway still send it requests",
                f"set {rollout.key('drainSeconds')} to {fmt(drain_seconds)} or more (the program adds the preStop "
                "sleep) and do not replace the container's lifecycle",
            ))
            continue
        for p in rollout.drain_problems(wait, grace, drain_seconds):
            if p.key == "drainSeconds":
                what = (f"container {c.get('name')!r} of serving Deployment {name} drains {fmt(wait)} s in preStop, "
                        f"less than the required {fmt(drain_seconds)} s")
            else:
                what = (f"serving Deployment {name} has terminationGracePeriodSeconds {fmt(grace)}, not more than its "
                        f"drain time {fmt(max(wait, drain_seconds))} s: the pod is killed before it finishes in-flight "
                        "requests")
            out.append(Finding(what, p.fix))
    return out


def revision_history(props: Mapping[str, Any], name: str, minimum: float) -> list[Finding]:
    """k8s-revision-history: keep enough ReplicaSets for ``kubectl rollout undo``."""
    limit = number(dig(props, "spec", "revisionHistoryLimit"))
    limit = float(rollout.KUBERNETES_DEFAULTS["revisionHistoryLimit"]) if limit is None else limit
    return [Finding(f"Deployment {_name(props, name)} keeps {fmt(limit)} old ReplicaSets (revisionHistoryLimit), "
                    f"fewer than {fmt(minimum)}", p.fix)
            for p in rollout.revision_history_problems(limit, minimum)]


def _images(pod_spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(c.get("name")), str(c.get("image") or "")) for c in _containers(pod_spec, init=True)]


def _pin_fix(key: str) -> str:
    return f"set {key} to an image pinned by {PINNED_FORMAT} (e.g. :2.0.0, or @sha256:... of the build)"


def images_pinned(props: Mapping[str, Any], kind: str, name: str) -> list[Finding]:
    """k8s-image-pinned (Deployment, Job, ...): images are pinned to a version tag or a digest."""
    pod = dig(props, "spec", "jobTemplate", "spec", "template", "spec", default=None) or _pod_spec(props)
    out = []
    for container, image in _images(pod):
        problem = pin_problem(image)
        if problem:
            key = IMAGE_KEYS.get(_name(props, name), IMAGE_KEYS["api"])
            out.append(Finding(f"{kind} {_name(props, name)} container {container!r}: {problem}; a rollback would "
                               "not bring the old code back", _pin_fix(key)))
    return out


# Every image the stack config names: the serving API (stable and canary), the workers, the gateway.
STATE_IMAGES = ("app.api", "app.worker", "app.canary", "gateway")


def state_images_pinned(t: Transition) -> list[Finding]:
    """k8s-image-pinned-in-state (gate): the images named in the target state are pinned too."""
    out = []
    for where in STATE_IMAGES:
        image = dig(t.target_state, *where.split("."), "image")
        problem = pin_problem(image) if image else None
        if problem:
            path = tuple(where.split(".")) + ("image",)
            applied = dig(t.previous_state, *path) if t.previous else None
            shown = f" (applied: {applied!r})" if applied and applied != image else ""
            out.append(Finding(f"bazbii:{where}.image{shown}: {problem}", _pin_fix(step_changes_key(t, *path))))
    return out


def workers_keep_running(t: Transition, least: float) -> list[Finding]:
    """k8s-workers-keep-running: a step never stops the job queue, unless its job is to retire the workers.

    The async job queue (the jobs that fill what an old code path leaves NULL among them) runs on the
    workers; the migration runner quiets them itself while it runs a stage and brings them back
    (components/schema_release.py), so no step needs to. Lowering ``app.worker.replicas`` below
    ``minWorkerReplicas`` is therefore refused, except in a step that does nothing else (changes only
    ``app.worker``): a step that exists to retire the workers. A one-step rollback is exempt.
    """
    if t.previous is None or t.is_rollback:
        return []
    old = number(dig(t.previous_state, "app", "worker", "replicas"))
    new = number(dig(t.target_state, "app", "worker", "replicas"))
    if new is None or new >= least or (old is not None and new >= old):
        return []
    stray = outside(changed_paths(t.previous_state or {}, t.target_state), [("app", "worker")])
    if not stray:
        return []
    key = step_changes_key(t, "app", "worker", "replicas")
    return [Finding(
        f"bazbii:app.worker.replicas is set {fmt(old) if old is not None else 'none'} -> {fmt(new)} (applied: "
        f"{fmt(old) if old is not None else 'none'}), below the {fmt(least)} the job queue needs (policy config "
        f"minWorkerReplicas), in an update that also changes {', '.join(config_key(p) for p in stray[:4])}"
        f"{' ...' if len(stray) > 4 else ''} ({t.moving_description()}): the async job queue would stop; the "
        "migration runner quiets the workers itself while it runs a stage",
        f"keep {key} at {fmt(old) if old is not None else fmt(least)} (at least {fmt(least)}); to retire the workers, "
        "do it in a step of its own that changes only bazbii:app.worker",
    )]


def canary_ladder(t: Transition, ladder: list[int]) -> list[Finding]:
    """k8s-canary-ladder: app.canary.weight rises at most one rung per update.

    No canary counts as weight 0; a canary whose image changes starts again at 0
    (a new version may only appear at the first rung). A one-step rollback is exempt.
    """
    if t.previous is None or goes_back(t):
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
    rung = rung_passed(ladder, old_weight, new_weight)
    if rung is None:
        return []
    what = (f"canary {new.get('image')} appears at weight {fmt(new_weight)}" if fresh
            else f"canary weight jumps {fmt(old_weight)} -> {fmt(new_weight)}")
    return [Finding(f"{what}, past the next rung {rung} of the canary ladder {ladder}",
                    f"set {step_changes_key(t, 'app', 'canary', 'weight')} to {rung} (or less) in this step and "
                    "raise it in later steps")]


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
                               f"set {rollout.key('pdbMaxUnavailable')} (the program adds a PodDisruptionBudget "
                               "selecting the API pods) and keep the Deployment's pod labels", urn))
            continue
        for pdb_name, _ns, _sel, min_available, max_unavailable in covering:
            if (min_available is not None and rollout.is_zero(min_available)) or \
                    (max_unavailable is not None and str(max_unavailable).strip() == "100%"):
                out.append(Finding(f"PodDisruptionBudget {pdb_name} for {name} allows every pod to be evicted",
                                   f"set {rollout.key('pdbMaxUnavailable')}: 1", urn))
    return out


# --------------------------------------------------------------------------- the policies
def registered_pdbs(resources: list, _config: Mapping[str, Any]) -> list[Finding]:
    """k8s-pod-disruption-budget (stack): the registered serving Deployments and PodDisruptionBudgets."""
    deployments: list[tuple[str, str, str, Mapping[str, Any], Optional[float]]] = []
    pdbs: list[tuple[str, str, Mapping[str, Any], Any, Any]] = []
    for r in resources:
        if r.resource_type == DEPLOYMENT and is_serving(r.props):
            props = r.props
            labels = plain(dig(props, "spec", "template", "metadata", "labels", default={}) or {})
            namespace = dig(props, "metadata", "namespace", default="default")
            deployments.append((r.urn, resource_label(props, r.name), namespace, labels,
                                number(dig(props, "spec", "replicas"))))
        elif r.resource_type == PDB:
            spec = plain(dig(r.props, "spec", default={}) or {})
            pdbs.append((resource_label(r.props, r.name), dig(r.props, "metadata", "namespace", default="default"),
                         dict((spec.get("selector") or {}).get("matchLabels") or {}),
                         spec.get("minAvailable"), spec.get("maxUnavailable")))
    return pod_disruption_budgets(deployments, pdbs)


CONFIG = {
    "canaryLadder": ladder_schema(list(DEFAULT_CANARY_LADDER)),
    "drainSeconds": {"type": "integer", "minimum": 0, "default": rollout.MIN_DRAIN_SECONDS,
                     "description": "minimum preStop drain of serving containers (s)"},
    "minRevisionHistory": {"type": "integer", "minimum": 0, "default": rollout.MIN_REVISION_HISTORY,
                           "description": "minimum Deployment revisionHistoryLimit (rollback targets kept)"},
    "minWorkerReplicas": {"type": "integer", "minimum": 1, "default": 1,
                          "description": "fewest worker pods the async job queue needs (lower only to retire them)"},
}


def _only(*keys: str) -> dict:
    return {k: CONFIG[k] for k in keys}


POLICIES = [
    resource_policy(
        "k8s-zero-unavailable",
        "Serving Deployments roll out with maxUnavailable 0.",
        (DEPLOYMENT,),
        lambda props, _t, name, _c: zero_unavailable(props, name),
    ),
    resource_policy(
        "k8s-readiness-probe",
        "Every container of a serving Deployment has a readiness probe.",
        (DEPLOYMENT,),
        lambda props, _t, name, _c: readiness_probe(props, name),
    ),
    resource_policy(
        "k8s-graceful-shutdown",
        "Serving containers drain in preStop for at least drainSeconds, within the termination grace period.",
        (DEPLOYMENT,),
        lambda props, _t, name, c: graceful_shutdown(props, name, number_setting(c, CONFIG, "drainSeconds")),
        _only("drainSeconds"),
    ),
    resource_policy(
        "k8s-revision-history",
        "Deployments keep enough old ReplicaSets to roll back.",
        (DEPLOYMENT,),
        lambda props, _t, name, c: revision_history(props, name, number_setting(c, CONFIG, "minRevisionHistory")),
        _only("minRevisionHistory"),
    ),
    stack_policy(
        "k8s-pod-disruption-budget",
        "Every serving Deployment is covered by a PodDisruptionBudget that keeps pods up.",
        registered_pdbs,
    ),
    gate_policy(
        "k8s-canary-ladder",
        "The canary's share of API pods rises at most one rung of the ladder per update.",
        lambda t, c: canary_ladder(t, ladder_setting(c, CONFIG, "canaryLadder")),
        _only("canaryLadder"),
    ),
    resource_policy(
        "k8s-image-pinned",
        "Container images are pinned: a version tag (MAJOR.MINOR.PATCH) or a digest; never a moving tag (latest, "
        "main, stable, ...).",
        (DEPLOYMENT, JOB, CRON_JOB, STATEFUL_SET, DAEMON_SET),
        lambda props, rtype, name, _c: images_pinned(props, rtype.rsplit(":", 1)[-1], name),
    ),
    gate_policy(
        "k8s-image-pinned-in-state",
        "Images named in the stack config are pinned: a version tag (MAJOR.MINOR.PATCH) or a digest.",
        lambda t, c: state_images_pinned(t),
    ),
    gate_policy(
        "k8s-workers-keep-running",
        "No step lowers app.worker.replicas below minWorkerReplicas (the job queue stops), unless the step only "
        "changes app.worker (it exists to retire the workers).",
        lambda t, c: workers_keep_running(t, number_setting(c, CONFIG, "minWorkerReplicas")),
        _only("minWorkerReplicas"),
    ),
]
