"""Reading the engine's event log (``engine.events``): what a ``pulumi up`` decided and what it changed."""

from __future__ import annotations

import json

from engine.events import read_event_log


def write_log(path, *events) -> None:
    path.write_text("".join(json.dumps({"sequence": n, "timestamp": 0, **event}) + "\n" for n, event in enumerate(events)))


def test_the_summary_counts_the_resources_the_engine_changed(tmp_path):
    log = tmp_path / "events.jsonl"
    write_log(log, {"preludeEvent": {"config": {}}},
              {"summaryEvent": {"maybeCorrupt": False, "durationSeconds": 7, "policyPacks": {},
                                "resourceChanges": {"same": 40, "update": 2, "create": 1, "replace": 1,
                                                    "create-replacement": 1, "delete-replaced": 1, "read": 3}}})
    judged = read_event_log(log, 0, "")
    assert judged.resource_changes["update"] == 2
    # a replacement counts once; unchanged and read resources not at all
    assert judged.changed == 4
    assert not judged.denied


def test_a_refused_update_changed_nothing_and_names_the_checks_reason(tmp_path):
    log = tmp_path / "events.jsonl"
    urn = "urn:pulumi:rehearsal::bazbii::bazbii:gate:TransitionCheck$pulumi-python:dynamic:Resource::transition-check"
    write_log(log, {"diagnosticEvent": {"severity": "error", "urn": urn,
                                        "message": "pulumi-python:dynamic:Resource resource 'transition-check' has a "
                                                   "problem: live gate of infra step 'traffic-50': soak not over"}},
              {"summaryEvent": {"maybeCorrupt": False, "durationSeconds": 2, "resourceChanges": {"same": 3}}})
    judged = read_event_log(log, 255, "")
    assert judged.denied and judged.changed == 0
    assert judged.check_failures("transition-check") == ["live gate of infra step 'traffic-50': soak not over"]


def test_no_log_no_changes(tmp_path):
    judged = read_event_log(tmp_path / "absent.jsonl", 1, "error: before the engine started")
    assert judged.denied and judged.changed == 0 and judged.resource_changes == {}
