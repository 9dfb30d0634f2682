"""Program assertions for the flags track: the ConfigMap the app reads, and pods that roll when it changes.

Registered into :data:`tests.program.test_steps.CHECKS` (imported from there),
so every step of the flags track is evaluated like every other step.
"""

from __future__ import annotations

import hashlib
import json

from tests.program.helpers import CONFIG_MAP, DEPLOYMENT, dep_names
from tests.program.test_steps import check

FLAGS_ANNOTATION = "bazbii.io/flags-checksum"


def flags_map(ev):
    (cm,) = [r for r in ev.by_type(CONFIG_MAP) if r.name == "app-flags"]
    return cm


def read_flags(ev) -> dict:
    """What every pod reads: the flags document, after checking each Deployment is wired to it."""
    cm = flags_map(ev)
    document = cm.inputs["data"]["flags.json"]
    checksum = hashlib.sha256(document.encode()).hexdigest()
    assert cm.inputs["metadata"]["name"] == f"bazbii-flags-{checksum[:12]}"
    assert cm.inputs["immutable"] is True
    deployments = ev.by_type(DEPLOYMENT)
    assert {d.name for d in deployments} >= {"app-api", "app-worker"}
    for d in deployments:
        template = d.inputs["spec"]["template"]
        assert template["metadata"]["annotations"][FLAGS_ANNOTATION] == checksum, d.name
        (container,) = template["spec"]["containers"]
        (var,) = [e for e in container["env"] if e["name"] == "BAZBII_FLAGS"]
        assert var["valueFrom"]["configMapKeyRef"] == {"name": cm.inputs["metadata"]["name"], "key": "flags.json"}
        assert "app-flags" in dep_names(d), f"{d.name} must wait for the flags ConfigMap"
    return json.loads(document)


def _expect(document: dict):
    def assertion(ev):
        assert read_flags(ev) == document
    return assertion


# What the app reads at each step of the flags track.
EXPECTED = {
    "none": {},
    "new-category-ui-0": {"new_category_ui": {"rollout": 0, "oldPathRemoved": False}},
    "new-category-ui-10": {"new_category_ui": {"rollout": 10, "oldPathRemoved": False}},
    "new-category-ui-50": {"new_category_ui": {"rollout": 50, "oldPathRemoved": False}},
    "new-category-ui-100": {"new_category_ui": {"rollout": 100, "oldPathRemoved": False}},
    "new-category-ui-old-path-removed": {"new_category_ui": {"rollout": 100, "oldPathRemoved": True}},
}
for _step, _document in EXPECTED.items():
    check("flags", _step)(_expect(_document))
