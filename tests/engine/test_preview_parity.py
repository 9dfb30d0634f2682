"""``./preview`` and the real ``pulumi preview`` judge the same pull requests the same way.

Each transition is a base stack file (what is applied) and a proposed one, both the twin's stack file
(the prod plan with the twin's addresses). ``./preview --base B --config C --json`` judges it offline;
the real CLI judges it with the project's policy pack, the real plugins and the twin's Kubernetes API
server and Cloudflare emulator, on a stack whose last outputs say ``B`` was applied (the record
``./preview`` reconstructs for ``B``, imported). Both evaluate the live gate against the stack's
``bazbii:metrics.endpoint`` (``--metrics config`` offline), which nothing serves here: a gated step is
denied as inconclusive by both.

They must agree on the verdict, on whether the program refused its config, on whether the transition
check's provider refused, and on the mandatory rules. A refused provider check ends the real preview at
the check (nothing after it is registered), so then only the rules on the check resource are compared;
a policy violation alone does not end a preview (it does end an ``up``: ``reachedByEngine`` offline).
"""

from __future__ import annotations

import copy
import io
import json
import re
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest
import yaml

from bazbii_plan.facts import TRANSITION_CHECK
from components.stack_inputs import CONFIG_REFUSED
from offline_preview import scenarios
from offline_preview.__main__ import main as offline_preview
from offline_preview.scenarios import CHECK_FAILURE
from engine.events import Judgement
from twin.operator import TwinOperator

pytestmark = pytest.mark.engine

CHECK = TRANSITION_CHECK
Edit = Callable[[dict], None]


def at(**pointers: str) -> Edit:
    def edit(document: dict) -> None:
        for key, step in pointers.items():
            document["config"][f"bazbii:{key}"] = step
    return edit


def step_of(document: dict, track: str, name: str) -> dict:
    return next(s for s in document["config"]["bazbii:plan"][track]["steps"] if s["name"] == name)


def both(*edits: Edit) -> Edit:
    def edit(document: dict) -> None:
        for one in edits:
            one(document)
    return edit


def ladder_skipped(document: dict) -> None:
    pools = step_of(document, "infra", "traffic-10")["changes"]["traffic"]["pools"]
    pools["server1"]["weight"], pools["server2"]["weight"] = 50, 50


def moving_worker_tag(document: dict) -> None:
    step_of(document, "release", "worker-2.0")["changes"]["app"]["worker"]["image"] = \
        "registry.example.com/bazbii/worker:main"


def long_pause(document: dict) -> None:
    document["config"]["bazbii:database"]["pooler"]["pauseTimeoutSeconds"] = 30


EXPANDED = dict(schemaPhase="0002-expand")
ON_SERVER2 = dict(phase="gateway-on-server2")


@dataclass(frozen=True)
class Case:
    name: str
    base: Optional[Edit]  # None: a stack never deployed
    target: Edit
    denied: bool  # what a reviewer expects (both previews must also agree with each other)
    base_age: str = "2d"


CASES = [
    # ------------------------------------------------------------------ allowed
    Case("first infra step", at(), at(phase="server3-provisioned"), False),
    Case("replica", at(phase="server3-provisioned"), at(phase="replica-streaming"), False),
    Case("gateway on server2", at(phase="replica-streaming"), at(**ON_SERVER2), False),
    Case("ttl lowered", at(**ON_SERVER2), at(**ON_SERVER2, dnsPhase="ttl-lowered"), False),
    Case("dns switch after the old ttl", at(**ON_SERVER2, dnsPhase="ttl-lowered"),
         at(**ON_SERVER2, dnsPhase="switched"), False),
    Case("expand", at(), at(**EXPANDED), False),
    Case("workers first", at(**EXPANDED), at(**EXPANDED, releasePhase="worker-2.0"), False),
    Case("flag declared at 0", at(), at(flagsPhase="new-category-ui-0"), False),
    Case("rollback to mvp", at(phase="server3-provisioned"), at(phase="mvp"), False),
    Case("rollback of traffic-10 (never gated)", at(phase="traffic-10"), at(**ON_SERVER2), False),
    Case("dns rollback", at(**ON_SERVER2, dnsPhase="switched"), at(**ON_SERVER2, dnsPhase="ttl-lowered"), False),
    Case("expand rolled back", at(**EXPANDED), at(), False),
    Case("no step moves", at(**ON_SERVER2), at(**ON_SERVER2), False),
    Case("never deployed, first steps", None, at(), False),
    # ------------------------------------------------------------------ denied
    Case("jump", at(), at(phase="replica-streaming"), True),
    Case("two tracks at once", at(), at(phase="server3-provisioned", dnsPhase="ttl-lowered"), True),
    Case("gated step without metrics", at(**ON_SERVER2), at(phase="traffic-10"), True),
    Case("weights past the next rung", at(**ON_SERVER2), both(at(phase="traffic-10"), ladder_skipped), True),
    Case("dns switch before the old ttl expired", at(**ON_SERVER2, dnsPhase="ttl-lowered"),
         at(**ON_SERVER2, dnsPhase="switched"), True, base_age="10m"),
    Case("contract before api 2.0", at(schemaPhase="0002-migrate"), at(schemaPhase="0002-contract"), True),
    Case("switchover rolled back", at(phase="db-switchover", dnsPhase="switched"),
         at(phase="server1-resized", dnsPhase="switched"), True),
    Case("two steps back", at(phase="traffic-50"), at(**ON_SERVER2), True),
    Case("never deployed, later step", None, at(phase="server3-provisioned"), True),
    Case("moving image tag", at(**EXPANDED), both(at(**EXPANDED, releasePhase="worker-2.0"), moving_worker_tag), True),
    Case("a safety bound loosened with no step", at(**ON_SERVER2), both(at(**ON_SERVER2), long_pause), True),
]


@dataclass
class Verdict:
    denied: bool
    config_refused: bool
    check_refused: bool
    rules: set[str] = field(default_factory=set)

    def key(self) -> tuple:
        return self.denied, self.config_refused, self.check_refused, self.rules

    def __str__(self) -> str:
        return (f"denied={self.denied} config_refused={self.config_refused} check_refused={self.check_refused} "
                f"rules={sorted(self.rules)}")


def offline_verdict(base: Optional[Path], target: Path, base_age: str) -> Verdict:
    argv = ["--config", str(target), "--metrics", "config", "--json"]
    argv += ["--base", "none"] if base is None else ["--base", str(base), "--base-age", base_age]
    out = io.StringIO()
    with redirect_stdout(out):
        code = offline_preview(argv)
    report = json.loads(out.getvalue())
    if code == 2:  # the config is refused before anything is registered, as the program refuses it
        assert report["errors"] and not report["transitions"], report
        return Verdict(True, True, False)
    assert code in (0, 1) and not report["errors"], report["errors"]
    (transition,) = report["transitions"]
    gate_denied = any(g["denied"] for g in report.get("liveGates", []))
    check_refused = gate_denied or any(v["policy_name"] == CHECK_FAILURE for v in transition["violations"])
    rules = {v["policy_name"] for v in transition["violations"]
             if v["enforcement"] == "mandatory" and v["policy_name"] != CHECK_FAILURE
             and (not check_refused or v["urn"].endswith(f"::{CHECK}"))}
    return Verdict(code != 0, False, check_refused, rules)


def real_verdict(operator: TwinOperator, base: Optional[Path], target: dict, base_age: str) -> Verdict:
    return judge_real(operator, base, target, base_age)[0]


def judge_real(operator: TwinOperator, base: Optional[Path], target: dict, base_age: str) -> tuple[Verdict, Judgement]:
    if base is None:
        operator.set_applied_record(None)
    else:
        # The record ./preview reconstructs for the base file (same code, same times), as the stack's last output.
        transition = scenarios.between_files(scenarios.load_side(base), scenarios.load_side(base),
                                             scenarios.parse_age(base_age))
        operator.set_applied_record(transition.previous_record)
    operator.use_stack_document(target)
    judged = operator.judged("preview")
    assert "Traceback" not in judged.output, judged.output[-3000:]
    config_refused = any(CONFIG_REFUSED in e.message for e in judged.errors)
    verdict = Verdict(judged.denied, config_refused, bool(judged.check_failures(CHECK)), judged.mandatory_policies)
    return verdict, judged


@pytest.fixture(scope="module")
def operator(twin_with_cloud):
    operator = TwinOperator.create(twin_with_cloud)
    yield operator
    operator.cleanup()


def test_the_parity_set_is_broad_enough():
    assert len(CASES) >= 20 and sum(case.denied for case in CASES) >= 8


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_offline_and_real_previews_agree(case: Case, operator: TwinOperator, tmp_path):
    start = yaml.safe_load(operator.stack_file.read_text()) if operator.document is None else operator.document
    base_doc = None
    if case.base is not None:
        base_doc = copy.deepcopy(start)
        case.base(base_doc)
    target_doc = copy.deepcopy(base_doc if base_doc is not None else start)
    case.target(target_doc)
    target = tmp_path / "proposed.yaml"
    target.write_text(yaml.safe_dump(target_doc, sort_keys=False))
    base = None
    if base_doc is not None:
        base = tmp_path / "applied.yaml"
        base.write_text(yaml.safe_dump(base_doc, sort_keys=False))
    offline = offline_verdict(base, target, case.base_age)
    real = real_verdict(operator, base, target_doc, case.base_age)
    assert offline.denied == case.denied, f"offline: {offline}"
    assert real.key() == offline.key(), f"real: {real}\noffline: {offline}"


# ---------------------------------------------------------------------------------------------------------------
# The published pack (scripts/build-policy-pack) judges as the in-repository pack does.

PUBLISHED_CASES = [case for case in CASES if case.name in {
    "first infra step", "gateway on server2", "jump", "weights past the next rung",
    "moving image tag", "a safety bound loosened with no step", "dns switch before the old ttl expired"}]


@pytest.fixture(scope="module")
def published_pack(operator, tmp_path_factory):
    """The pack as ``pulumi policy publish`` uploads it: built into a folder outside the program (no path back
    to the repository), its virtualenv made from its own requirements.txt by ``pulumi install`` there."""
    from policies.distribution import build

    pack = build(tmp_path_factory.mktemp("published") / "policy-pack")
    installed = operator.workspace.run("install", cwd=pack, check=False, timeout=900)
    assert installed.returncode == 0, installed.output[-3000:]
    assert (pack / "venv" / "bin" / "python").exists()
    return pack


def _timeless(message: str) -> str:
    """A message with the clock taken out (the two packs judge seconds apart: 'until <time>', 'another <n> min')."""
    message = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", "<time>", message)
    return re.sub(r"another \d+ (s|min|h)\b", r"another <n> \1", message)


def full_judgement(operator: TwinOperator, base: Path, target: dict, base_age: str) -> tuple:
    verdict, judged = judge_real(operator, base, target, base_age)
    violations = {(v.policy, v.level, v.urn.rsplit("::", 1)[-1], _timeless(v.message)) for v in judged.violations}
    return verdict.key(), violations


def test_the_published_pack_is_built_whole():
    assert len(PUBLISHED_CASES) == 7 and sum(case.denied for case in PUBLISHED_CASES) >= 4


@pytest.mark.parametrize("case", PUBLISHED_CASES, ids=[case.name for case in PUBLISHED_CASES])
def test_the_published_pack_judges_as_the_repositorys(case: Case, operator: TwinOperator, published_pack, tmp_path):
    start = operator.document or yaml.safe_load(operator.stack_file.read_text())
    base_doc = copy.deepcopy(start)
    case.base(base_doc)
    target_doc = copy.deepcopy(base_doc)
    case.target(target_doc)
    base = tmp_path / "applied.yaml"
    base.write_text(yaml.safe_dump(base_doc, sort_keys=False))
    try:
        operator.policy_pack = None
        in_repository = full_judgement(operator, base, target_doc, case.base_age)
        operator.policy_pack = published_pack
        published = full_judgement(operator, base, target_doc, case.base_age)
    finally:
        operator.policy_pack = None
    assert published == in_repository
    assert in_repository[0][0] == case.denied
