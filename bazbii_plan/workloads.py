"""Which app images run, with how many pods, for a given ``app`` state (plain camelCase data).

One definition for the component that registers the Deployments
(:mod:`components.api_deployment`) and for the rules that ask which versions
are running (a feature flag may be on only where every running version reads it).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional


def canary_split(replicas: int, weight: Optional[int]) -> tuple[int, int]:
    """``(stable, canary)`` replicas for a canary at ``weight`` percent of the API pods."""
    if not weight:
        return replicas, 0
    canary = min(replicas, math.ceil(replicas * weight / 100))
    return replicas - canary, canary


def running_images(app: Optional[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(where, image)`` of every Deployment that has pods in this state: stable, canary, workers.

    A stable Deployment scaled to 0 by a canary at 100 % runs nothing; quiet
    workers (scaled to 0 while a migration runs) count as running, since they
    come back with the same image.
    """
    if not app:
        return []
    out = []
    api, worker, canary = app.get("api") or {}, app.get("worker") or {}, app.get("canary") or {}
    replicas = int(api.get("replicas") or 0)
    stable, canary_pods = canary_split(replicas, int(canary.get("weight") or 0) if canary else None)
    if api.get("image") and stable > 0:
        out.append(("app.api", api["image"]))
    if canary.get("image") and canary_pods > 0:
        out.append(("app.canary", canary["image"]))
    if worker.get("image") and int(worker.get("replicas") or 0) > 0:
        out.append(("app.worker", worker["image"]))
    return out
