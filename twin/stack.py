"""The twin's stack file: the prod stack file with the few values that must name the twin instead.

Everything else (the plan, its steps, gates and criteria, the images, the database and pooler settings,
the Cloudflare account and zone ids, which the emulator serves) stays exactly as in ``Pulumi.prod.yaml``.
The differences, each for a reason that holds only on this machine:

=====================================  =================================================================
server addresses                       every production address of a server (base state and plan steps,
                                       e.g. the DNS record's content) becomes that server's twin address
``app.api.replicas`` 2,                ten API pods rolled one by one at 10 s each would make every
``app.worker.replicas`` 1,             rollout minutes long on two cores; the rollout rules
``app.rollout.minReadySeconds`` 5      (maxSurge, maxUnavailable 0, readiness) are unchanged
``bazbii:metrics.endpoint``            the twin's own metrics endpoint, when it has one
=====================================  =================================================================

The stack's secrets and the providers' endpoints (``cloudflare:baseUrl``, ``kubernetes:kubeconfig``)
are set with ``pulumi config set`` like an operator sets production's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PROD_STACK_FILE = REPO_ROOT / "Pulumi.prod.yaml"
NAMESPACE = "bazbii"

# Values the twin sets in the base state (a merge patch on bazbii:app), for the reason in the docstring.
TWIN_APP_PATCH = {"api": {"replicas": 2}, "worker": {"replicas": 1}, "rollout": {"minReadySeconds": 5}}


def _merge(base: dict, patch: Mapping[str, Any]) -> dict:
    out = dict(base)
    for key, value in patch.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, Mapping) else value
    return out


def production_addresses(config: Mapping[str, Any]) -> dict[str, str]:
    """server name -> production address, from the base state and every plan step that declares a server."""
    addresses = {name: server["address"] for name, server in (config.get(f"{NAMESPACE}:servers") or {}).items()
                 if isinstance(server, Mapping) and "address" in server}
    for track in (config.get(f"{NAMESPACE}:plan") or {}).values():
        for step in track.get("steps", []):
            for name, server in ((step.get("changes") or {}).get("servers") or {}).items():
                if isinstance(server, Mapping) and "address" in server:
                    addresses[name] = server["address"]
    return addresses


def _replace_strings(value: Any, mapping: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, list):
        return [_replace_strings(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _replace_strings(v, mapping) for k, v in value.items()}
    return value


def twin_stack_document(prod: Mapping[str, Any], twin_addresses: Mapping[str, str], *,
                        steps: Optional[Mapping[str, str]] = None,
                        metrics_endpoint: Optional[str] = None) -> dict:
    """The twin's stack file as a document; ``steps`` sets track pointers (key -> step), e.g. all at the start."""
    config = dict(prod["config"])
    production = production_addresses(config)
    missing = sorted(set(production) - set(twin_addresses))
    if missing:
        raise ValueError(f"the twin has no address for {', '.join(missing)}")
    config = _replace_strings(config, {address: twin_addresses[name] for name, address in production.items()})
    config[f"{NAMESPACE}:app"] = _merge(config[f"{NAMESPACE}:app"], TWIN_APP_PATCH)
    if metrics_endpoint:
        config[f"{NAMESPACE}:metrics"] = dict(config.get(f"{NAMESPACE}:metrics") or {}, endpoint=metrics_endpoint)
    for key, step in (steps or {}).items():
        config[f"{NAMESPACE}:{key}"] = step
    return {**{k: v for k, v in prod.items() if k != "config"}, "config": config}


def first_steps(prod: Mapping[str, Any]) -> dict[str, str]:
    """Track pointer key -> the track's first step (a stack that was never deployed starts there)."""
    plan = prod["config"][f"{NAMESPACE}:plan"]
    return {track["key"]: track["steps"][0]["name"] for track in plan.values()}


def state_of(document: Mapping[str, Any]):
    """The desired state (bazbii_plan's StackState) a stack document declares at its track pointers."""
    from bazbii_plan.stackconfig import SECRET_KEYS, load_stack_config
    from bazbii_plan.stackfile import fill_secret_placeholders

    values = {k.split(":", 1)[1]: v for k, v in document["config"].items() if k.startswith(f"{NAMESPACE}:")}
    secret_keys: set[str] = set()
    fill_secret_placeholders(values, secret_keys, SECRET_KEYS)
    return load_stack_config(values, secret_keys).state()


def load_prod(path: Path = PROD_STACK_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def write_stack_file(document: Mapping[str, Any], path: Path) -> None:
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False, width=120))


def cloudflare_of_prod() -> dict:
    """The Cloudflare account and zone the prod stack names: what the twin's emulator serves."""
    cloudflare = load_prod()["config"]["bazbii:cloudflare"]
    return {"accounts": [cloudflare["accountId"]], "zones": {cloudflare["zoneId"]: cloudflare["zone"]}}
