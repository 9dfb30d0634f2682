"""Reading the engine's event log (``engine.events``): what a ``pulumi up`` decided and what it changed."""

from __future__ import annotations

import json

from bazbii_analysis.verdict import printed_verdicts
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


def test_the_live_gates_verdict_is_read_from_what_the_plugins_printed(tmp_path):
    """The engine logs a plugin's output line by line with no URN (sdk plugin.go: ``StreamMessage("", ...)``);
    the check may run twice in an update, and other plugins print too."""
    log = tmp_path / "events.jsonl"
    lines = ["live gate of infra step 'db-switchover' PASSED\n",
             "  PASS         longest-transaction [server server2]: 0.4 s (threshold <= 5 s)\n"]
    write_log(log, *({"diagnosticEvent": {"severity": "info", "urn": "", "message": line}} for line in lines * 2),
              {"diagnosticEvent": {"severity": "info", "urn": "", "message": "PASS is a word a plugin may print\n"}})
    judged = read_event_log(log, 0, "")
    assert printed_verdicts(judged.printed_lines()) == [line.rstrip() for line in lines]
    assert judged.errors == [] and judged.check_failures("transition-check") == []
    assert printed_verdicts(["nothing gated here"]) == []


def test_a_failed_command_is_named_by_its_last_line(tmp_path):
    log = tmp_path / "events.jsonl"
    urn = "urn:pulumi:rehearsal::bazbii::command:remote:Command::db-switchover"
    failed = ("error: Process exited with status 1: running \"sudo -n bash -c 'set -euo pipefail ...'\":\n"
              "{\"aborted\": true, \"stage\": \"precheck\"}\n"
              "switchover aborted, old primary serving at precheck: replay lag 4579832 bytes >= 1048576\n")
    write_log(log, {"diagnosticEvent": {"severity": "error", "urn": urn, "message": failed}},
              {"diagnosticEvent": {"severity": "error", "urn": "", "message": "update failed"}})
    judged = read_event_log(log, 255, "")
    assert judged.resource_failures() == [
        "switchover aborted, old primary serving at precheck: replay lag 4579832 bytes >= 1048576"]
