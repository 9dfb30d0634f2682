"""Bring the MVP up, put it under load, walk the shipped plan, gate every step, roll back on a
trigger, and stop everything at the end (also on Ctrl-C or an error)."""

from __future__ import annotations

import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bazbii_plan.stackconfig import StackConfig
from offline_preview.scenarios import load_side
from bazbii_plan.walk import walk
from testsupport.localcluster import make_workdir

from .bootstrap import SEED_POSTS, bootstrap_database
from .faults import Faults, parse_injections
from .gate import evaluate_step
from .procs import ProcessRegistry, wait_until
from .reconcilers import CheckFailed, Context, StepRefused, build_reconcilers, reconcile
from .services import ADDRESSES, EDGE, PY, Services


BASELINE_SECONDS = 30.0  # the load before the first step, what each step's p95 is held to (both rehearsals);
# 30 s (3,000 requests at 100/s): a 10 s baseline's p95 differed by 40 % between two idle walks (7.0, 10.1 ms)


@dataclass
class Options:
    stack_file: Path = Path("Pulumi.prod.yaml")
    rate: float = 100.0
    soak: float = 6.0
    baseline: float = BASELINE_SECONDS
    ttl_scale: float = 120.0
    until: str | None = None
    inject: list[str] = field(default_factory=list)
    out_dir: Path = Path("rehearsal-out")
    min_samples: int = 50
    gate_timeout: float = 10.0
    keep_run_dir: bool = False


@dataclass
class StepRun:
    track: str
    step: str
    action: str                 # apply | rollback | retry
    started: float              # wall-clock seconds
    applied: float = 0.0
    ended: float = 0.0
    outcome: str = ""           # passed | failed | refused | rolled-back | recovered | not-recovered | error
    fault: str | None = None
    notes: list[str] = field(default_factory=list)
    gate: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)


@dataclass
class RunResult:
    started: float
    baseline: tuple[float, float]
    steps: list[StepRun]
    records_path: Path
    ports: dict
    options: Options
    ended: float = 0.0
    error: str = ""
    stopped: list[str] = field(default_factory=list)
    run_dir: str = ""


def load_config(path: Path) -> StackConfig:
    # The local servers use no secret (trust on loopback): the offline placeholders do.
    return load_side(path).config


def plan_sequence(config: StackConfig, until: str | None) -> list[tuple[str, str, dict, dict]]:
    """(track, step, steps before, steps after) in apply order; the tracks start at their first steps."""
    maps = walk(config)
    out = []
    for before, after in zip(maps, maps[1:]):
        track = next(t for t in after if after[t] != before[t])
        out.append((track, after[track], before, after))
        if until and after[track] == until:
            break
    if until and (not out or out[-1][1] != until):
        raise ValueError(f"--until {until!r}: no such step in the plan's apply order")
    return out


def _fresh(config: StackConfig, steps: dict):
    return config.with_steps(**steps).state()


def step_states(config: StackConfig, sequence: list[tuple[str, str, dict, dict]]) -> dict:
    """Step -> (the state before it, the state after it) for :func:`plan_sequence`'s moves."""
    return {step: (_fresh(config, before), _fresh(config, after)) for _, step, before, after in sequence}


@dataclass
class Prepared:
    config: StackConfig
    sequence: list
    step_states: dict
    faults: Faults


def prepare(options: Options) -> Prepared:
    """Everything that can be wrong with the arguments or the config, before anything starts."""
    config = load_config(options.stack_file)
    sequence = plan_sequence(config, options.until)
    states = step_states(config, sequence)
    return Prepared(config, sequence, states, Faults(parse_injections(options.inject, states)))


def run(options: Options, say: Callable[[str], None], prepared: Prepared) -> RunResult:
    config, sequence, step_states, faults = (prepared.config, prepared.sequence, prepared.step_states,
                                             prepared.faults)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    run_dir = make_workdir("bazbii-rehearsal-")
    registry = ProcessRegistry(run_dir)
    records_path = options.out_dir / "requests.csv"
    result = RunResult(started=time.time(), baseline=(0, 0), steps=[], records_path=records_path, ports={},
                       options=options, run_dir=str(run_dir))
    first = _fresh(config, config.plan.first_steps())
    try:
        services = Services(run_dir, registry, options.ttl_scale)
        result.ports = services.ports
        ctx = Context(services, faults, say, options.soak, options.gate_timeout)
        reconcilers = build_reconcilers()
        say(f"topology: servers {', '.join(f'{k}={v}' for k, v in ADDRESSES.items())}; load balancer, DNS, "
            f"resolver and Prometheus on {EDGE}")
        say(f"run directory {run_dir}")
        primary = first.database.primary
        services.start_primary(primary)
        bootstrap_database(services.pg[primary])
        say(f"database: PostgreSQL 15 primary on {primary}, schema 0001 applied by the migration runner, "
            f"{SEED_POSTS} posts seeded")
        services.start_pgbouncer(primary)
        say(f"pooler: PgBouncer (transaction mode) on {first.database.pooler.server}")
        reconcilers["app"].start(first, ctx)
        for server in sorted(s for s, v in first.servers.items() if "gateway" in v.roles):
            services.start_gateway(server)
        pools = {n: {"server": p.server, "weight": p.weight} for n, p in first.traffic.pools.items()}
        services.start_haproxy(pools)
        for name in pools:
            services.wait_pool(name, "UP")
        reconcilers["dns"].start(first, ctx)
        say(f"dns: nsd + unbound; TTLs are time-scaled 1/{options.ttl_scale:g} (3600 s is served as "
            f"{services.scaled_ttl(3600)} s, 300 s as {services.scaled_ttl(300)} s)")
        services.start_prometheus()
        say(f"metrics: Prometheus on {services.prometheus_url()} (HAProxy, API, PgBouncer, postgres exporters)")
        load = registry.start("load", [PY, "-m", "rehearsal.load", "--lb", f"http://{EDGE}:{services.ports['lb']}",
                                       "--resolver", f"{EDGE}:{services.ports['unbound']}",
                                       "--gateway-port", str(services.ports["nginx"]), "--rate", str(options.rate),
                                       "--read-ids", str(SEED_POSTS), "--out", str(records_path.resolve())],
                              stop_timeout=20)
        wait_until(lambda: records_path.exists() and records_path.stat().st_size > 200, 30, "load generator")
        say(f"load: {options.rate:g} req/s open loop; baseline for {options.baseline:g} s")
        base_start = time.time()
        time.sleep(options.baseline)
        result.baseline = (base_start, time.time())

        for track, step, before, after in sequence:
            old, new = step_states[step]
            if not _walk_step(track, step, old, new, config, ctx, reconcilers, options, result, services, say):
                break
        time.sleep(min(2.0, options.soak))
        registry.stop(load)
    except BaseException as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        result.ended = time.time()
        result.stopped = registry.stop_all()
        if options.keep_run_dir:
            say(f"run directory kept: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    return result


def _gate(services, state, track, step, options, run: StepRun, say) -> bool:
    verdicts = evaluate_step(services.prometheus_url(), state, track, step, options.soak, options.min_samples)
    passed = all(v.passed for v in verdicts)
    for v in verdicts:
        run.gate += v.lines()
    say(("  gate PASSED: " if passed else "  gate FAILED: ") + "; ".join(
        f"{s.scope} {s.name}={s.value if s.value is None else round(s.value, 4)}" for v in verdicts for s in v.signals))
    return passed


def _apply(track, step, action, old, new, ctx, reconcilers, options, result, services, say) -> tuple[StepRun, bool]:
    run = StepRun(track, step, action, started=time.time())
    result.steps.append(run)
    ctx.notes, ctx.timings = [], {}
    run.fault = ctx.faults.arm(step, services) if action == "apply" else None
    if run.fault:
        say(f"  fault injected: {run.fault}")
    check_failed = False
    try:
        reconcile(reconcilers, old, new, ctx)
        refused = False
    except CheckFailed as exc:
        refused, check_failed = False, True
        ctx.act(f"check failed: {exc}")
    except StepRefused as exc:
        refused = True
        say(f"  step refused: {exc}")
    except Exception as exc:  # a half-applied step: reported, the walk stops (no blind rollback)
        run.notes, run.timings = list(ctx.notes) + [f"ERROR: {type(exc).__name__}: {exc}"], dict(ctx.timings)
        run.applied = run.ended = time.time()
        run.outcome = "error"
        say(f"  step failed with an error, stopping the walk: {type(exc).__name__}: {exc}")
        return run, False
    run.applied = time.time()
    run.notes, run.timings = list(ctx.notes), dict(ctx.timings)
    time.sleep(options.soak)
    passed = not (refused or check_failed) and _gate(services, new, track, step, options, run, say)
    run.outcome = "passed" if passed else ("refused" if refused else "failed")
    run.ended = time.time()
    return run, refused


def _walk_step(track, step, old, new, config, ctx, reconcilers, options, result, services, say) -> bool:
    say(f"[{track}] {step}")
    run, refused = _apply(track, step, "apply", old, new, ctx, reconcilers, options, result, services, say)
    if run.outcome == "passed":
        return True
    if run.outcome == "error":
        return False
    # One-step rollback to the previous step's desired state (nothing to undo after a refusal).
    back = StepRun(track, step, "rollback", started=time.time())
    result.steps.append(back)
    ctx.notes, ctx.timings = [], {}
    reversible = config.plan.tracks[track].steps[config.plan.tracks[track].index(step)].reversible
    if not refused:
        if not reversible:
            back.outcome, back.ended = "error", time.time()
            back.notes.append(f"{step} is irreversible by config: roll forward by hand")
            say(f"  {step} failed its gate and cannot be rolled back by config; stopping")
            return False
        say(f"  rolling back one step: {step} -> previous")
        reconcile(reconcilers, new, old, ctx)
    else:
        ctx.act(f"rollback: {step} was refused before any change; the previous step keeps serving")
    back.applied = time.time()
    back.notes = list(ctx.notes)
    # Recovery: the error rate must be back under the trigger within two soak intervals.
    recovered = False
    for _ in range(2):
        time.sleep(options.soak)
        if _gate(services, old, track, step, options, back, say):
            recovered = True
            break
    back.outcome = "recovered" if recovered else "not-recovered"
    back.ended = time.time()
    fixed = ctx.faults.clear(services)
    if not fixed:
        say(f"  {step} failed its gate without an injected fault; stopping the walk")
        return False
    say(f"  fault {fixed} cleared (the operator's fix); retrying {step}")
    retry, _ = _apply(track, step, "retry", old, new, ctx, reconcilers, options, result, services, say)
    return retry.outcome == "passed"
