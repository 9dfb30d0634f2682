"""``./rehearse``: the plan applied by the real ``pulumi up`` on the twin, under load.

Each step is applied the way production applies it: the track pointer set in the stack's config and
``pulumi up`` with the project's policy pack, from the edge, on a local file backend. The stack is named
``rehearsal`` (the only stack that may set ``bazbii:timeScale``), so every soak, metrics window and DNS
wait is divided by the time scale, and the transition check evaluates each step's criteria with the
production PromQL against a Prometheus that scrapes what the stack's outputs declare
(:mod:`twin.observe`). The load goes through the edge, whose HAProxy the Cloudflare emulator's state
steers: the weights that serve it are the ones the program declared.

The walk goes from the MVP to ``--until`` (default: the plan's last step) in the plan's apply order, the
order ``./rehearse`` walks: every track's steps, each after the steps of other tracks its ``requires``
names (gateway-off-server1 after the DNS switched). A step that resizes a server that already runs is
done in the provider's console first (the program only checks the spec), which here is the twin's console.

For each step the walk records the check's before-criteria verdict (each refused attempt with the
check's reason; a refusal that time cures, a soak or an old DNS TTL not over yet, is retried as an
operator would, after waiting), then, once the step's watch period is over, the rollback triggers' verdict
on what the step moved: the scope and period ``watch`` uses in production
(:func:`bazbii_analysis.watchsetup.watched_scope`, ``next_soak_seconds``). A fault that fails requests
(``--inject gateway-5xx@STEP``, ``canary-errors@STEP``) is armed once the step is applied; when the triggers fail, the walk
rolls back with ``pulumi up`` of the previous step, clears the fault (the operator's fix) and applies
the step again. ``--inject replica-lag@db-switchover`` is armed before the step's ``pulumi up``, which
must fail (the switchover's pre-check refuses the lagging replica); ``pulumi up`` of the previous step,
the fix, and the step again.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Optional

from bazbii_analysis import PrometheusClient, evaluate_criteria
from bazbii_analysis.evaluate import SCALED_WINDOW_FLOOR_SECONDS
from bazbii_analysis.verdict import HEADLINE_PREFIX, printed_verdicts
from bazbii_db.replication.switchover import PRECHECK_FAILED, WINDOW_STEPS
from bazbii_analysis.watchsetup import next_soak_seconds, watched_scope
from bazbii_plan.facts import SWITCHOVER_REPORT_OUTPUT, TRANSITION_CHECK, image_tag
from bazbii_plan.gates import GateCriteria, format_duration
from bazbii_plan.stackconfig import REHEARSAL_STACK, StackConfig
from bazbii_plan.timegates import TTL_NOT_EXPIRED
from engine.build import Installed
from twin.environment import Twin
from twin.existing import seed_mvp
from twin.observe import Edge, Prometheus, start_edge, start_prometheus
from twin.operator import TwinOperator
from twin.server import REPO_ROOT
from twin.stack import cloudflare_of_prod, first_steps, load_prod, twin_stack_document

from .faults import ERROR_RATE, LAG_FILLER_SQL, PAUSE_REPLAY_SQL, RESUME_REPLAY_SQL, fault_applies, parse_injections
from .sequence import BASELINE_SECONDS, load_config, plan_sequence, step_states

PROD_STACK_FILE = REPO_ROOT / "Pulumi.prod.yaml"
INFRA = "infra"
EDGE_FROM = "gateway-on-server2"  # the first step whose gateways both serve behind their tunnels
TRIGGER_WINDOW = "1h"  # the rollback triggers' window when a step has no watch period (scaled, floored)
SERVER_SIZE = {"vcpu": "vcpu", "memoryGb": "memory_gb", "diskGb": "disk_gb"}  # plan key -> console setting
# What production runs on other machines (the operator's pulumi, the Kubernetes control plane, Cloudflare's API)
# yields the twin's two cores to the servers (SCHED_IDLE, Twin.elsewhere_idle): the steps' p95 and the
# switchover's stall are the serving path's, not the engine's CPU. Measured: at niceness 10 the slowest 2 s of
# a walk still came while the program, the policy pack and the dynamic providers ran.
ELSEWHERE_IDLE = True
# The servers' disks (PostgreSQL x3, etcd, Prometheus, the engine's state) are memory in the rehearsal: on the
# twin they are one virtual disk, whose fsyncs stalled a primary's commits 350-400 ms in a walk (every write
# waiting, no read; /proc/pressure/io). Production's servers have a disk each. Falls back to the system's
# temporary directory where there is no /dev/shm.
MEMORY_DISK = Path("/dev/shm")
# Faults armed once the step is applied, failing ERROR_RATE of the requests they reach (server2's gateway, the
# canary's pods): the step's rollback triggers must catch them.
AFTER_UP_FAULTS = ("gateway-5xx", "canary-errors")
# Faults armed before the step's pulumi up: the update itself must refuse (the switchover's own pre-check).
BEFORE_UP_FAULTS = ("replica-lag",)


def fails_requests(fault: Optional[str]) -> bool:
    """Whether ``fault`` makes requests fail by design (the gateway's, the canary's); replica-lag must fail none."""
    return fault in AFTER_UP_FAULTS


LAG_DRAIN_SECONDS = 120  # how long the replica may take to replay what the fault held back, once resumed


@dataclass
class Attempt:
    at: str
    applied: bool
    reasons: list[str]  # the check's refusals (empty when applied)
    seconds: float  # how long pulumi up took
    changes: dict[str, int] = field(default_factory=dict)  # the engine's summary: operation -> resources
    changed: int = 0  # resources the engine created, updated, replaced, deleted or imported
    gate: list[str] = field(default_factory=list)  # the check's live-gate verdict with its numbers (none: ungated)
    switchover: dict = field(default_factory=dict)  # when this up ran the switchover: its window and steps (ms)


@dataclass
class StepRecord:
    step: str
    track: str = INFRA
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
    baseline: float = BASELINE_SECONDS  # the load before the first step it sees: what each step's p95 is held to
    edge: Optional[Edge] = None
    load: Optional[subprocess.Popen] = None
    records: list[StepRecord] = field(default_factory=list)
    switchover_report: Optional[str] = None  # the stack's switchoverReport output after the last applied up

    # ------------------------------------------------------------------ set-up
    @classmethod
    def start(cls, engine: Installed, time_scale: int, rate: float, out: Path,
              say: Callable[[str], None] = print, twin: Optional[Twin] = None,
              baseline: float = BASELINE_SECONDS) -> "EngineRehearsal":
        """The twin (or ``twin``), its Prometheus, the ``rehearsal`` stack over the running MVP."""
        out.mkdir(parents=True, exist_ok=True)
        owns = twin is None
        if twin is None:
            disk = servers_disk()
            say(f"starting the twin (servers, Kubernetes, the Cloudflare emulator); the servers' disks in "
                f"{disk or 'the temporary directory (no ' + str(MEMORY_DISK) + ')'}; pulumi, the control plane "
                f"and the emulator {'under SCHED_IDLE' if ELSEWHERE_IDLE else 'as started'}, as on machines of their own")
            twin = Twin.start_new(kube_bin=engine.bin, cloudflare=cloudflare_of_prod(),
                                  elsewhere_idle=ELSEWHERE_IDLE, scratch=disk)
            say(f"the twin runs in {twin.workdir} (removed at the end, also on Ctrl-C)")
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
        return cls(twin, operator, prometheus, time_scale, rate, out, say, baseline)

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
        self.say(f"load: {self.rate:g} requests/s through the edge at {self.edge.http}; {self.baseline:g} s of "
                 "baseline before the next step")
        time.sleep(self.baseline)

    # ------------------------------------------------------------------ steps
    def up(self, step: str, track: str = INFRA) -> Attempt:
        """``pulumi config set bazbii:<the track's key> STEP`` and ``pulumi up`` with the policy pack."""
        started = time.monotonic()
        self.operator.set_steps(**{prod_config().track_key(track): step})
        judged = self.operator.judged("up")
        attempt = Attempt(at=datetime.now(timezone.utc).isoformat(timespec="seconds"), applied=not judged.denied,
                          reasons=judged.check_failures(TRANSITION_CHECK) if judged.denied else [],
                          seconds=round(time.monotonic() - started, 1),
                          changes=dict(judged.resource_changes), changed=judged.changed,
                          gate=printed_verdicts(judged.printed_lines()))
        if judged.denied and not attempt.reasons:  # not the check: the engine's errors (a command that failed)
            attempt.reasons = judged.resource_failures() or [judged.output[-1500:]]
        if attempt.applied:
            outputs = self.operator.outputs()
            self.prometheus.follow(outputs)
            report = outputs.get(SWITCHOVER_REPORT_OUTPUT)
            if report and report != self.switchover_report:  # this up ran the switchover (a new report)
                attempt.switchover = switchover_timings(report)
            self.switchover_report = report
        return attempt

    def apply(self, step: str, previous: str, patience: float, track: str = INFRA) -> StepRecord:
        """Apply ``step``, retrying while it is refused for a reason time will cure (soak, samples, an old
        DNS TTL), at most ``patience`` seconds; the pointer goes back to ``previous`` after a refusal."""
        record = StepRecord(step, track)
        deadline = time.monotonic() + patience
        while True:
            attempt = self.up(step, track)
            record.attempts.append(attempt)
            if attempt.applied:
                self.say(f"{track}: {step}: applied by pulumi up in {attempt.seconds:g} s, "
                         f"{attempt.changed} resource(s) changed"
                         + (f"; {switchover_line(attempt.switchover)}" if attempt.switchover else ""))
                return record
            self.operator.set_steps(**{prod_config().track_key(track): previous})
            self.say(f"{track}: {step}: refused: {'; '.join(attempt.reasons)[:300]}")
            if not all(_time_cures(r) for r in attempt.reasons) or time.monotonic() > deadline:
                return record
            time.sleep(5)

    def applied_steps(self) -> dict[str, str]:
        """Track -> the step the stack's last update applied (empty before the first update)."""
        return dict(self.operator.outputs().get("steps") or {})  # a stack never updated has no outputs: {}

    def resize_in_console(self, step: str, previous: str) -> None:
        """The operator's console action before a step that resizes a running server (the program checks
        the spec, the provider's console changes it)."""
        for name, size in console_resizes(prod_config(), step, previous).items():
            self.twin.servers[name].resize(**{SERVER_SIZE[key]: value for key, value in size.items()})
            self.say(f"{INFRA}: {step}: {name} resized in the console to {size} (the operator's action)")

    def psql(self, server: str, sql: str, database: str = "postgres") -> str:
        """``sql`` as PostgreSQL's superuser on ``server`` (over SSH, as an operator would)."""
        done = self.twin.servers[server].ssh(
            f"sudo -n runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -d {database} -tAc {shlex.quote(sql)}")
        if done.returncode != 0:
            raise RuntimeError(f"psql on {server}: {done.stderr.strip()[-500:]}")
        return done.stdout.strip()

    def arm_replica_lag(self, source: str, target: str) -> None:
        self.psql(target, PAUSE_REPLAY_SQL)
        self.psql(source, LAG_FILLER_SQL)

    def clear_replica_lag(self, source: str, target: str) -> None:
        """Resume replay on ``target`` and wait until it has replayed what ``source`` wrote meanwhile."""
        self.psql(target, RESUME_REPLAY_SQL)
        deadline = time.monotonic() + LAG_DRAIN_SECONDS
        wanted = self.psql(source, "SELECT pg_current_wal_lsn()")
        while self.psql(target, f"SELECT pg_last_wal_replay_lsn() >= '{wanted}'::pg_lsn") != "t":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target} did not replay up to {source}'s {wanted} in {LAG_DRAIN_SECONDS} s")
            time.sleep(1)

    def fail_requests(self, fault: str, track: str, step: str, share: float) -> str:
        """Arm (``share`` > 0) or clear (0) a fault of :data:`AFTER_UP_FAULTS` at ``step``; what it does, in words.
        gateway-5xx: server2's gateway container; canary-errors: the pods of the step's canary image."""
        if fault == "gateway-5xx":
            done = self.twin.servers["server2"].ssh(f"sudo -n docker twin-fault bazbii-gateway {share:g}")
            if done.returncode != 0:
                raise RuntimeError(f"{fault} on server2: {done.stderr.strip()}")
            return f"server2's gateway fails {share:.0%} of requests"
        canary = prod_config().with_steps(**{track: step}).state().app.canary
        tag = image_tag(canary.image) if canary is not None else None
        if tag is None:
            raise RuntimeError(f"{fault} at {step}: the step has no canary image with a tag")
        if self.twin.kube is None:
            raise RuntimeError(f"{fault}: the twin runs no Kubernetes")
        self.twin.kube.fail_requests("api", tag, share)
        return f"the canary's pods (api {tag}) fail {share:.0%} of requests"

    def triggers(self, step: str, track: str = INFRA) -> tuple[str, list[str]]:
        """The rollback triggers (``bazbii:rollback``) on what ``step`` moved, over its watch period (scaled),
        measured now from the edge, with the production PromQL."""
        config = prod_config().with_steps(**{track: step})  # the twin's stack differs only in addresses and sizes
        measured = trigger_criteria(config, track)
        metrics = config.metrics.model_copy(update={"endpoint": self.prometheus.url})

        def measure():
            client = PrometheusClient(self.prometheus.url)
            try:
                return evaluate_criteria(measured, config.state().rollback, metrics, track=track, step=step,
                                         since=None, now=datetime.now(timezone.utc), client=client,
                                         time_scale=self.time_scale)
            finally:
                client.close()

        verdict = self.twin.lab.in_edge(measure)
        return verdict.status, [s.line() for s in verdict.signals]


def switchover_timings(report: str) -> dict:
    """The switchover's window and the time of each of its steps (ms), from its JSON report (the stack output)."""
    try:
        parsed = json.loads(report)
        steps = parsed.get("steps_ms", {})
        order = [step for step in WINDOW_STEPS if step in steps] + sorted(set(steps) - set(WINDOW_STEPS))
        return {"window_ms": round(parsed["window_ms"], 1) if parsed.get("window_ms") is not None else None,
                "steps_ms": {step: round(steps[step], 1) for step in order}}
    except (ValueError, TypeError, AttributeError, KeyError):
        return {"unreadable": report[:300]}


def switchover_line(timings: dict) -> str:
    """``switchover window 38.2 ms (pause 0.4, fence 2.1, ...)``: where PgBouncer held the clients (the window's
    steps in order, then the others: the wait for long transactions before, the retirement after)."""
    if "unreadable" in timings:
        return f"switchover report unreadable: {timings['unreadable']}"
    window = timings.get("window_ms")
    steps = ", ".join(f"{step} {ms:g}" for step, ms in timings.get("steps_ms", {}).items())
    return f"switchover window {'-' if window is None else f'{window:g}'} ms ({steps})"


def servers_disk() -> Optional[Path]:
    """:data:`MEMORY_DISK` where it can hold the twin, else None (the system's temporary directory)."""
    return MEMORY_DISK if MEMORY_DISK.is_dir() and os.access(MEMORY_DISK, os.W_OK | os.X_OK) else None


@functools.cache
def prod_config() -> StackConfig:
    """The prod stack file's config, read once: every step, refusal and trigger of a walk asks for it, and
    the file does not change under a walk (``with_steps`` gives moved copies, never changes this one)."""
    return load_config(PROD_STACK_FILE)


def starting_steps(config: StackConfig, applied: Mapping[str, str]) -> dict[str, str]:
    """Track -> where the walk starts it: the applied step, else the track's first (a stack never updated)."""
    return {track: applied.get(track) or t.names()[0] for track, t in config.plan.tracks.items()}


def trigger_criteria(config: StackConfig, track: str) -> GateCriteria:
    """What ``watch`` measures after the track's current step: the scope it moved, over its watch period (the
    next step's soak; :data:`TRIGGER_WINDOW` when there is none)."""
    period = next_soak_seconds(config, track)
    window = format_duration(period) if period else TRIGGER_WINDOW
    return GateCriteria(scope=watched_scope(config, track), window=window)


def console_resizes(config: StackConfig, step: str, previous: str) -> dict[str, dict[str, int]]:
    """Server -> the sizes an infra step changes, for servers that already run at ``previous``."""
    before = config.with_steps(**{INFRA: previous}).state().servers
    after = config.with_steps(**{INFRA: step}).state().servers
    out = {}
    for name, server in after.items():
        if name in before:
            old, new = before[name].model_dump(by_alias=True), server.model_dump(by_alias=True)
            changed = {key: new[key] for key in SERVER_SIZE if new[key] != old[key]}
            if changed:
                out[name] = changed
    return out


def _time_cures(reason: str) -> bool:
    """A refusal that waiting can cure: the live gate's (a soak not over yet, too few samples in the window
    so far, errors still inside the window) or an old DNS TTL not outlived yet; a policy's or a step order's
    refusal is not retried."""
    return reason.startswith(HEADLINE_PREFIX) or TTL_NOT_EXPIRED in reason


def summary(records: list[StepRecord]) -> list[dict]:
    return [{**asdict(r), "applied": r.applied} for r in records]


# --------------------------------------------------------------------------- the walk
def walk_sequence(until: Optional[str]) -> list[tuple[str, str]]:
    """``(track, step)`` in the plan's apply order, the order ``./rehearse`` walks (every track's step after
    the ones its ``requires`` name), up to ``until`` (default: the plan's last step)."""
    return [(track, step) for track, step, _, _ in plan_sequence(prod_config(), until)]


def moves(config: StackConfig, sequence: list[tuple[str, str]], applied: Mapping[str, str]) -> list[tuple[str, str]]:
    """The moves of ``sequence`` the stack has not applied yet. ``applied``: track -> the step the stack's last
    update applied; empty before the first update, which then takes the running MVP over at every track's
    first step (the first move: the infra track's first step)."""
    current = starting_steps(config, applied)
    tracks = config.plan.tracks
    first = [] if applied else [(INFRA, current[INFRA])]
    return first + [(track, step) for track, step in sequence
                    if tracks[track].index(step) > tracks[track].index(current[track])]


def injections(values: list[str], until: Optional[str]) -> dict[str, str]:
    """``--inject FAULT@STEP`` values -> {step: fault}: each at a step of this walk where it can show (the rule
    ``./rehearse`` applies, :func:`rehearsal.faults.parse_injections`), and under the load, which starts once
    both gateways serve (after gateway-on-server2)."""
    config = prod_config()
    sequence = plan_sequence(config, until)
    states = step_states(config, sequence)
    faults = parse_injections(values, states)
    steps = [step for _, step, _, _ in sequence]
    served = steps[steps.index(EDGE_FROM) + 1:] if EDGE_FROM in steps else []
    for step, fault in faults.items():
        if step not in served:
            valid = [s for s in served if fault_applies(fault, *states[s])]
            raise ValueError(f"--inject {fault}@{step}: the load starts after {EDGE_FROM}; under it {fault} can "
                             f"show at {', '.join(valid) or 'no step of this walk'}")
    return faults


def scaled(seconds: float, time_scale: int) -> float:
    return seconds / time_scale


def patience(config: StackConfig, track: str, step: str, time_scale: int) -> float:
    """How long an operator waits for refusals that time cures: the step's scaled soak and two minutes."""
    steps = config.plan.tracks[track]
    criteria = steps.steps[steps.index(step)].criteria
    return scaled(criteria.soak_seconds() if criteria else 0, time_scale) + 120


def walk(rehearsal: EngineRehearsal, sequence: list[tuple[str, str]], faults: dict[str, str]) -> bool:
    """Apply the moves of ``sequence`` (:func:`walk_sequence`) the stack has not applied yet; True when every
    step was applied and its triggers passed (after any rollback and the retry the fault's rollback calls for)."""
    config = prod_config()
    applied = rehearsal.applied_steps()
    current = starting_steps(config, applied)
    for track, step in moves(config, sequence, applied):
        previous = current[track]
        if track == INFRA:
            rehearsal.resize_in_console(step, previous)
        if faults.get(step) in BEFORE_UP_FAULTS:
            record = _refused_then_applied(rehearsal, step, previous, faults.pop(step), track)
        else:
            record = rehearsal.apply(step, previous, patience(config, track, step, rehearsal.time_scale), track)
            rehearsal.records.append(record)
        if record is None or not record.applied:
            return False
        current[track] = step
        if step == EDGE_FROM:
            rehearsal.start_load()
        elif rehearsal.load is not None and previous != step:
            if not _soak_and_judge(rehearsal, record, step, previous, faults.pop(step, None), track):
                return False
    return True


def _refused_then_applied(rehearsal: EngineRehearsal, step: str, previous: str, fault: str,
                          track: str) -> Optional[StepRecord]:
    """A fault armed before the step's ``pulumi up`` (replica-lag: the switchover's pre-check must refuse the
    lagging replica, before it pauses anything): the up must fail; ``pulumi up`` of the previous step then
    restores whatever that update changed before it failed, the operator's fix clears the fault, and the
    step is applied again. None when the switchover's pre-check did not catch it (the step went through, or
    its up failed for another reason)."""
    config = prod_config()
    states = step_states(config, plan_sequence(config, step))[step]
    source, target = (state.database.primary for state in states)
    rehearsal.arm_replica_lag(source, target)
    rehearsal.say(f"{track}: {step}: fault {fault} armed (replay paused on {target}, WAL written on {source})")
    caught = rehearsal.apply(step, previous, 0, track)
    caught.fault = fault
    rehearsal.records.append(caught)
    if caught.applied or not any(PRECHECK_FAILED in reason for reason in caught.attempts[-1].reasons):
        rehearsal.say(f"{track}: {step}: {'applied' if caught.applied else 'failed for another reason'} with "
                      f"{fault} armed: not caught by the switchover's pre-check")
        rehearsal.clear_replica_lag(source, target)
        return None
    back = rehearsal.up(previous, track)
    caught.rolled_back = back.applied
    rehearsal.say(f"{track}: {step}: rolled back to {previous} by pulumi up ({'applied' if back.applied else 'REFUSED'})")
    rehearsal.clear_replica_lag(source, target)
    rehearsal.say(f"{track}: {step}: fault cleared (the operator's fix); applying {step} again")
    if not back.applied:
        return caught
    retry = rehearsal.apply(step, previous, patience(prod_config(), track, step, rehearsal.time_scale), track)
    rehearsal.records.append(retry)
    return retry


def _soak_and_judge(rehearsal: EngineRehearsal, record: StepRecord, step: str, previous: str,
                    fault: Optional[str], track: str = INFRA) -> bool:
    if fault:
        record.fault = fault
        rehearsal.say(f"{track}: {step}: fault {fault} armed ({rehearsal.fail_requests(fault, track, step, ERROR_RATE)})")
    config = prod_config().with_steps(**{track: step})
    time.sleep(_trigger_wait(trigger_criteria(config, track), rehearsal.time_scale))
    record.triggers, record.trigger_signals = rehearsal.triggers(step, track)
    rehearsal.say(f"{track}: {step}: rollback triggers {record.triggers}: {'; '.join(record.trigger_signals)}")
    if record.triggers == "pass":
        return True
    back = rehearsal.up(previous, track)
    record.rolled_back = back.applied
    rehearsal.say(f"{track}: {step}: rolled back to {previous} by pulumi up ({'applied' if back.applied else 'REFUSED'})")
    if fault:
        rehearsal.fail_requests(fault, track, step, 0)
        rehearsal.say(f"{track}: {step}: fault cleared (the operator's fix); applying {step} again")
    if not back.applied or not fault:
        return False
    time.sleep(_trigger_wait(GateCriteria(window=TRIGGER_WINDOW), rehearsal.time_scale))  # the errors leave the window
    retry = rehearsal.apply(step, previous, patience(prod_config(), track, step, rehearsal.time_scale), track)
    rehearsal.records.append(retry)
    if not retry.applied:
        return False
    return _soak_and_judge(rehearsal, retry, step, previous, None, track)


def _trigger_wait(criteria: GateCriteria, time_scale: int) -> float:
    """Long enough for the scaled trigger window to fill with the step's own traffic."""
    return max(scaled(criteria.window_seconds(), time_scale), SCALED_WINDOW_FLOOR_SECONDS) + 2
