"""./preview with applied times (--applied, --base-age), a never-deployed base and the applied history.

Each case is previewed like a reviewer would: exit 1 naming the rule for the unsafe
one, exit 0 for its safe counterpart, exit 2 naming the option for bad arguments.
"""

import copy
from datetime import datetime, timedelta, timezone

import pytest

from tests.preview.conftest import prod_doc  # noqa: F401  (the shared fixture)
from tests.preview.prs import PROD, run, step
from tests.preview.prs import write as write_path


def ago(**delta) -> str:
    # with its seconds: a time cut to the minute made "20 min ago" up to 59 s older, and a slow run read 21 min
    return (datetime.now(timezone.utc) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def write(tmp_path, name, doc):
    return str(write_path(tmp_path, name, doc))


def mandatory(out, rule):
    return [line for line in out.splitlines() if line.startswith("mandatory") and rule in line]


# --------------------------------------------------------------------------- applied times
def test_switch_with_the_known_time_of_the_ttl_step_passes(capsys):
    code, out, _ = run(capsys, "--phase", "dns=switched", "--applied", f"dns=ttl-lowered@{ago(hours=2)}")
    assert code == 0, out
    assert "applied times given: dns=ttl-lowered applied at" in out


def test_switch_too_soon_after_the_ttl_step_is_denied(capsys):
    code, out, _ = run(capsys, "--phase", "dns=switched", "--applied", f"dns=ttl-lowered@{ago(minutes=20)}")
    assert code == 1
    (line,) = mandatory(out, "dns-lower-ttl-before-switch:")
    assert "only 20 min after its TTL was lowered" in line and "wait another 40 min" in line


def test_without_times_the_preview_says_what_it_assumed_and_fails_closed(capsys):
    code, out, _ = run(capsys, "--phase", "dns=switched")
    assert code == 1
    assert "every applied step has no known time, so time gates that need one fail closed" in out
    assert any("is not recorded" in line and "--applied" in line for line in mandatory(out, "dns-lower-ttl"))


def test_base_age_is_the_fallback_for_every_step_without_a_given_time(capsys):
    code, out, _ = run(capsys, "--phase", "dns=switched", "--base-age", "2h")
    assert code == 0, out
    assert "every applied step" not in out and "every other applied step assumed applied at" in out


@pytest.mark.parametrize("times", [
    ["--applied", f"dns=switched@{ago(minutes=5)}", "--applied", f"dns=ttl-lowered@{ago(hours=3)}"],
    ["--base-age", "5m"],  # the case: every step stamped with the base age
])
def test_urgent_dns_rollback_minutes_after_the_switch_passes(capsys, tmp_path, prod_doc, times):
    switched = copy.deepcopy(prod_doc)
    switched["config"]["bazbii:dnsPhase"] = "switched"
    rolled_back = copy.deepcopy(switched)
    rolled_back["config"]["bazbii:dnsPhase"] = "ttl-lowered"
    code, out, _ = run(capsys, "--base", write(tmp_path, "applied.yaml", switched),
                       "--config", write(tmp_path, "proposed.yaml", rolled_back), *times)
    assert code == 0, out
    # ... while switching forward that soon is still held back.
    code, out, _ = run(capsys, "--base", write(tmp_path, "applied.yaml", rolled_back),
                       "--config", write(tmp_path, "proposed.yaml", switched), "--applied", f"dns=ttl-lowered@{ago(minutes=5)}")
    assert code == 1 and mandatory(out, "dns-lower-ttl-before-switch:")


@pytest.mark.parametrize("value, message", [
    ("dns=ttl-lowered", "--applied dns=ttl-lowered: write TRACK=STEP@TIME"),
    ("dns=ttl-lowered@yesterday", "--applied dns=ttl-lowered@yesterday: 'yesterday' is not an ISO 8601 time"),
    ("dns=switched@2026-01-01T00:00Z", "--applied dns=switched: step 'switched' is not applied in the base"),
    ("dns=nope@2026-01-01T00:00Z", "--applied dns=nope: unknown step 'nope' on track 'dns'"),
    ("dns=baseline@2999-01-01T00:00Z", "--applied dns=baseline@2999-01-01T00:00Z: 2999-01-01T00:00Z is in the future"),
])
def test_bad_applied_times_are_one_line_errors_with_exit_2(capsys, value, message):
    code, out, err = run(capsys, "--phase", "dns=switched", "--applied", value)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip().startswith(message), err


# --------------------------------------------------------------------------- never deployed
def test_never_deployed_base_allows_only_first_steps(capsys, tmp_path, prod_doc):
    code, out, _ = run(capsys, "--base", "none")
    assert code == 1
    assert mandatory(out, "plan-fail-closed:") and "the update stops at transition-check" in out
    first = copy.deepcopy(prod_doc)
    first["config"].update({"bazbii:phase": "mvp", "bazbii:releasePhase": "api-1.9", "bazbii:schemaPhase": "none",
                            "bazbii:dnsPhase": "baseline"})
    code, out, _ = run(capsys, "--base", "none", "--config", write(tmp_path, "first.yaml", first))
    assert code == 0, out
    adopted = copy.deepcopy(prod_doc)
    adopted["config"]["bazbii:phaseOverride"] = "adopting the running stack at traffic-10"
    code, out, _ = run(capsys, "--base", "none", "--config", write(tmp_path, "adopted.yaml", adopted))
    assert code == 0, out


def test_never_deployed_base_takes_no_applied_times(capsys):
    code, _out, err = run(capsys, "--base", "none", "--base-age", "2h")
    assert code == 2 and "--base-age and --applied apply to --base FILE or --phase previews" in err


# --------------------------------------------------------------------------- applied history
def test_editing_an_applied_step_is_denied_naming_it(capsys, tmp_path, prod_doc):
    proposed = copy.deepcopy(prod_doc)
    step(proposed, "infra", "replica-streaming")["reversible"] = False
    code, out, _ = run(capsys, "--base", str(PROD), "--config", write(tmp_path, "proposed.yaml", proposed))
    assert code == 1
    (line,) = mandatory(out, "plan-applied-history-immutable:")
    assert "applied step 'replica-streaming' of track 'infra' was edited after it was applied" in line
    assert "put the change in a new step" in line


def test_reordering_applied_steps_is_denied_naming_them(capsys, tmp_path, prod_doc):
    proposed = copy.deepcopy(prod_doc)
    steps = proposed["config"]["bazbii:plan"]["release"]["steps"]
    steps.insert(1, {"name": "worker-1.9.1", "summary": "Patch the workers.", "gate": "None.", "rollback": "Set back.",
                     "changes": {"app": {"worker": {"image": "registry.example.com/bazbii/worker:1.9.1"}}}})
    code, out, _ = run(capsys, "--base", str(PROD), "--config", write(tmp_path, "proposed.yaml", proposed))
    assert code == 1
    lines = mandatory(out, "plan-applied-history-immutable:")
    assert any("applied step 'worker-2.0' of track 'release' moved from position 2 to 3" in line for line in lines)


def test_history_edits_pass_with_an_override_and_new_steps_and_texts_always_pass(capsys, tmp_path, prod_doc):
    overridden = copy.deepcopy(prod_doc)
    step(overridden, "infra", "replica-streaming")["reversible"] = False
    overridden["config"]["bazbii:phaseOverride"] = "replica step re-declared after incident 42"
    code, out, _ = run(capsys, "--base", str(PROD), "--config", write(tmp_path, "overridden.yaml", overridden))
    assert code == 0, out
    improved = copy.deepcopy(prod_doc)
    step(improved, "infra", "traffic-10")["rollback"] = "Set bazbii:phase gateway-on-server2 at once."
    improved["config"]["bazbii:plan"]["dns"]["steps"].append(
        {"name": "ttl-raised", "summary": "TTL 2 h.", "gate": "A week switched.", "rollback": "Set ttl-restored.",
         "changes": {"dns": {"records": {"direct": {"ttl": 7200}}}}})
    code, out, _ = run(capsys, "--base", str(PROD), "--config", write(tmp_path, "improved.yaml", improved))
    assert code == 0, out
