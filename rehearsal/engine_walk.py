"""``./rehearse --engine``: the infra track applied by the real ``pulumi up`` on the twin, under load.

Each step is applied the way production applies it: the track pointer set in the stack's config and
``pulumi up`` with the project's policy pack, from the edge, on a local file backend. The stack is named
``rehearsal`` (the only stack that may set ``bazbii:timeScale``), so every soak, metrics window and DNS
wait is divided by the time scale, and the transition check evaluates each step's criteria with the
production PromQL against a Prometheus that scrapes what the stack's outputs declare
(:mod:`twin.observe`). The load goes through the edge, whose HAProxy the Cloudflare emulator's state
steers: the weights that serve it are the ones the program declared.

For each step the walk records the check's before-criteria verdict (each refused attempt with the
check's reason; a step whose soak has not passed yet is retried as an operator would, after waiting),
then, after the step's own scaled soak, the rollback triggers' verdict on the step's scope. A fault
(``--inject gateway-5xx@STEP``) is armed once the step is applied; when the triggers fail, the walk
rolls back with ``pulumi up`` of the previous step, clears the fault (the operator's fix) and applies
the step again.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from bazbii_analysis import PrometheusClient, evaluate_criteria
from bazbii_analysis.evaluate import SCALED_WINDOW_FLOOR_SECONDS
from bazbii_plan.facts import TRANSITION_CHECK
from bazbii_plan.gates import GateCriteria
from bazbii_plan.stackconfig import REHEARSAL_STACK
from engine.build import Installed
from twin.environment import Twin
from twin.existing import seed_mvp
from twin.observe import Edge, Prometheus, start_edge, start_prometheus
from twin.operator import TwinOperator
from twin.server import REPO_ROOT
from twin.stack import cloudflare_of_prod, first_steps, load_prod, twin_stack_document

from .runner import load_config

PROD_STACK_FILE = REPO_ROOT / "Pulumi.prod.yaml"
INFRA_POINTER = "phase"
EDGE_FROM = "gateway-on-server2"  # the first step whose gateways both serve behind their tunnels
TRIGGER_WINDOW = "1h"  # the rollback triggers' window, scaled (never under the evaluation's floor)
FAULT_SHARE = {"gateway-5xx": 0.2}  # share of server2's gateway requests failed


@dataclass
class Attempt:
    at: str
    applied: bool
    reasons: list[str]  # the check's refusals (empty when applied)
    seconds: float  # how long pulumi up took
    changes: dict[str, int] = field(default_factory=dict)  # the engine's summary: operation -> resources
    changed: int = 0  # resources the engine created, updated, replaced, deleted or imported


@dataclass
class StepRecord:
    step: str
    attempts: list[Attempt] = field(default_factory=list)
    triggers: str = "not measured"  # the rollback triggers' verdict after the step's soak
    trigger_signals: list[str] = field(default_factory=list)
    rolled_back: bool = False
    fault: Optional[str] = None

    @property
    def applied(self) -> bool:
        return any(a.applied for a in self.attempts)


@dataclass
class EngineRehearsal:
    twin: Twin
    operator: TwinOperator
    prometheus: Prometheus
    time_scale: int
    rate: float
    out: Path
    say: Callable[[str], None] = print
    edge: Optional[Edge] = None
    load: Optional[subprocess.Popen] = None
    records: list[StepRecord] = field(default_factory=list)

    # ------------------------------------------------------------------ set-up
    @classmethod
    def start(cls, engine: Installed, time_scale: int, rate: float, out: Path,
              say: Callable[[str], None] = print, twin: Optional[Twin] = None) -> "EngineRehearsal":
        """The twin (or ``twin``), its Prometheus, the ``rehearsal`` stack over the running MVP."""
        out.mkdir(parents=True, exist_ok=True)
        owns = twin is None
        if twin is None:
            say("starting the twin (servers, Kubernetes, the Cloudflare emulator)")
            twin = Twin.start_new(kube_bin=engine.bin, cloudflare=cloudflare_of_prod())
        try:
            prometheus = start_prometheus(twin)
            prod = load_prod()
            document = twin_stack_document(prod, {name: s.address for name, s in twin.servers.items()},
                                           steps=first_steps(prod), metrics_endpoint=prometheus.url)
            document["config"]["bazbii:timeScale"] = time_scale
            operator = TwinOperator.create(twin, stack=REHEARSAL_STACK, document=document)
            say("seeding the MVP (PostgreSQL on server2, PgBouncer on server1, the data)")
            seed_mvp(twin, operator.document, operator.secrets)
        except BaseException:
            if owns:
                twin.stop()
            raise
        return cls(twin, operator, prometheus, time_scale, rate, out, say)

    def stop(self, stop_twin: bool = True) -> None:
        if self.load is not None and self.load.poll() is None:
            self.load.terminate()
            self.load.wait(30)
        if self.edge is not None:
            self.edge.stop()
        self.prometheus.stop()
        self.operator.cleanup()
        if stop_twin:
            self.twin.stop()

    @property
    def load_csv(self) -> Path:
        return self.out / "load.csv"

    def start_load(self) -> None:
        """The edge, and the open-loop load through it (reads and writes, the direct record through unbound)."""
        self.edge = start_edge(self.twin, self.time_scale)
        with open(self.out / "load.log", "ab") as log:
            self.load = self.twin.lab.popen("edge", [
                sys.executable, "-m", "rehearsal.load", "--lb", f"http://{self.edge.http}", "--resolver",
                self.edge.resolver, "--gateway-port", "8080", "--rate", f"{self.rate:g}", "--out", str(self.load_csv)],
                cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log)
        self.say(f"load: {self.rate:g} requests/s through the edge at {self.edge.http}")

    # ------------------------------------------------------------------ steps
    def up(self, step: str) -> Attempt:
        """``pulumi config set bazbii:phase STEP`` and ``pulumi up`` with the policy pack."""
        started = time.monotonic()
        self.operator.set_steps(**{INFRA_POINTER: step})
        judged = self.operator.judged("up")
        attempt = Attempt(at=datetime.now(timezone.utc).isoformat(timespec="seconds"), applied=not judged.denied,
                          reasons=judged.check_failures(TRANSITION_CHECK) if judged.denied else [],
                          seconds=round(time.monotonic() - started, 1),
                          changes=dict(judged.resource_changes), changed=judged.changed)
        if judged.denied and not attempt.reasons:
            attempt.reasons = [judged.output[-1500:]]
        if attempt.applied:
            self.prometheus.follow(self.operator.outputs())
        return attempt

    def apply(self, step: str, previous: str, patience: float) -> StepRecord:
        """Apply ``step``, retrying while its gate refuses for a reason time will cure (soak, samples), at
        most ``patience`` seconds; the pointer goes back to ``previous`` after a refusal."""
        record = StepRecord(step)
        deadline = time.monotonic() + patience
        while True:
            attempt = self.up(step)
            record.attempts.append(attempt)
            if attempt.applied:
                self.say(f"{step}: applied by pulumi up in {attempt.seconds:g} s, {attempt.changed} resource(s) changed")
                return record
            self.operator.set_steps(**{INFRA_POINTER: previous})
            self.say(f"{step}: refused by the check: {'; '.join(attempt.reasons)[:300]}")
            if not all(_time_cures(r) for r in attempt.reasons) or time.monotonic() > deadline:
                return record
            time.sleep(5)

    def triggers(self, step: str) -> tuple[str, list[str]]:
        """The rollback triggers (``bazbii:rollback``) on ``step``'s scope over the scaled window, measured now
        from the edge, with the production PromQL."""
        config = load_config(PROD_STACK_FILE)  # the twin's stack differs only in addresses and replica counts
        track = config.plan.tracks["infra"]
        criteria = track.steps[track.index(step)].criteria or GateCriteria()
        measured = GateCriteria(scope=criteria.scope, window=TRIGGER_WINDOW, min_samples=criteria.min_samples)
        metrics = config.metrics.model_copy(update={"endpoint": self.prometheus.url})

        def measure():
            client = PrometheusClient(self.prometheus.url)
            try:
                return evaluate_criteria(measured, config.state().rollback, metrics, track="infra", step=step,
                                         since=None, now=datetime.now(timezone.utc), client=client,
                                         time_scale=self.time_scale)
            finally:
                client.close()

        verdict = self.twin.lab.in_edge(measure)
        return verdict.status, [s.line() for s in verdict.signals]


def _time_cures(reason: str) -> bool:
    """A refusal that waiting can cure: the live gate's (a soak not over yet, too few samples in the window
    so far, errors still inside the window); a policy's or a step order's refusal is not retried."""
    return reason.startswith("live gate of ")


def summary(records: list[StepRecord]) -> list[dict]:
    return [{**asdict(r), "applied": r.applied} for r in records]


# --------------------------------------------------------------------------- the walk
def infra_sequence(until: Optional[str]) -> list[str]:
    """The infra track's steps in apply order, up to ``until`` (default: the traffic shift's end)."""
    names = load_config(PROD_STACK_FILE).plan.tracks["infra"].names()
    until = until or "traffic-100"
    if until not in names:
        raise ValueError(f"--until {until!r}: not a step of the infra track ({', '.join(names)})")
    return names[: names.index(until) + 1]


def check_injections(faults: dict[str, str], sequence: list[str]) -> None:
    """Only the gateway fault is rehearsed through the engine, at a step after the edge serves the load."""
    served = sequence[sequence.index(EDGE_FROM) + 1:] if EDGE_FROM in sequence else []
    for step, fault in faults.items():
        if fault not in FAULT_SHARE:
            raise ValueError(f"--inject {fault}@{step}: through the engine only {', '.join(FAULT_SHARE)} is rehearsed")
        if step not in served:
            raise ValueError(f"--inject {fault}@{step}: the load reaches server2's gateway at {', '.join(served) or 'no step'}"
                             f" of this walk")


def scaled(seconds: float, time_scale: int) -> float:
    return seconds / time_scale


def walk(rehearsal: EngineRehearsal, sequence: list[str], faults: dict[str, str]) -> bool:
    """Apply ``sequence``; True when every step was applied and its triggers passed (after any rollback and
    the retry the fault's rollback calls for)."""
    config = load_config(PROD_STACK_FILE)
    track = config.plan.tracks["infra"]
    previous: Optional[str] = None
    for step in sequence:
        criteria = track.steps[track.index(step)].criteria
        patience = scaled(criteria.soak_seconds(), rehearsal.time_scale) + 120 if criteria else 0
        record = rehearsal.apply(step, previous or step, patience)
        rehearsal.records.append(record)
        if not record.applied:
            return False
        if step == EDGE_FROM:
            rehearsal.start_load()
        if rehearsal.load is not None and previous is not None and step != EDGE_FROM:
            if not _soak_and_judge(rehearsal, record, step, previous, faults.pop(step, None)):
                return False
        previous = step
    return True


def _soak_and_judge(rehearsal: EngineRehearsal, record: StepRecord, step: str, previous: str,
                    fault: Optional[str]) -> bool:
    server2 = rehearsal.twin.servers["server2"]
    if fault:
        done = server2.ssh(f"sudo -n docker twin-fault bazbii-gateway {FAULT_SHARE[fault]}")
        if done.returncode != 0:
            raise RuntimeError(f"arming {fault} on server2: {done.stderr.strip()}")
        record.fault = fault
        rehearsal.say(f"{step}: fault {fault} armed (server2's gateway fails {FAULT_SHARE[fault]:.0%} of requests)")
    time.sleep(_trigger_wait(rehearsal.time_scale))
    record.triggers, record.trigger_signals = rehearsal.triggers(step)
    rehearsal.say(f"{step}: rollback triggers {record.triggers}: {'; '.join(record.trigger_signals)}")
    if record.triggers == "pass":
        return True
    back = rehearsal.up(previous)
    record.rolled_back = back.applied
    rehearsal.say(f"{step}: rolled back to {previous} by pulumi up ({'applied' if back.applied else 'REFUSED'})")
    if fault:
        server2.ssh("sudo -n docker twin-fault bazbii-gateway 0")
        rehearsal.say(f"{step}: fault cleared (the operator's fix); applying {step} again")
    if not back.applied or not fault:
        return False
    time.sleep(_trigger_wait(rehearsal.time_scale))  # the errors leave the window before the step's gate
    config = load_config(PROD_STACK_FILE)
    track = config.plan.tracks["infra"]
    criteria = track.steps[track.index(step)].criteria
    retry = rehearsal.apply(step, previous, scaled(criteria.soak_seconds(), rehearsal.time_scale) + 120
                            if criteria else 0)
    rehearsal.records.append(retry)
    if not retry.applied:
        return False
    return _soak_and_judge(rehearsal, retry, step, previous, None)


def _trigger_wait(time_scale: int) -> float:
    """Long enough for the scaled trigger window to fill with the step's own traffic."""
    return max(scaled(GateCriteria(window=TRIGGER_WINDOW).window_seconds(), time_scale),
               SCALED_WINDOW_FLOOR_SECONDS) + 2
