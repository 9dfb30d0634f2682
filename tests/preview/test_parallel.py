"""``./preview --all`` checks its transitions in worker processes (issue 28, speed): the same results as one
process, errors raised as they were raised, a dead worker reported, and each program evaluation done once."""

import json
import os
import signal
import time
from types import SimpleNamespace

import pytest

from bazbii_plan.errors import ConfigError
from offline_preview import parallel, scenarios

from .prs import PROD, run

# The first deployment and the first six steps with their rollbacks: enough for two runs of the plan.
SOME = 13


@pytest.fixture(scope="module")
def plan():
    return scenarios.whole_plan(scenarios.load_side(PROD))


@pytest.fixture
def fresh_cache(monkeypatch):
    """No evaluation left over from another test (a worker forked with a full cache would evaluate nothing)."""
    monkeypatch.setattr(scenarios, "_EVALUATIONS", {})


def _seen(result):
    # Independent resources may register in another order in another process (asyncio's scheduling, as under
    # the engine), so changes are compared by URN.
    changes = sorted((c.urn, c.op, [(p.path, p.before, p.after) for p in c.changes]) for c in result.resource_changes)
    return (result.transition.title, result.failed, sorted(v.message for v in result.violations),
            json.dumps(changes, default=str))


def test_runs_are_contiguous_and_never_part_a_step_from_its_rollback():
    items = [SimpleNamespace(rollback=False)] + [SimpleNamespace(rollback=r) for _ in range(26) for r in (False, True)]
    for jobs in (1, 2, 3, 4, 9):
        cut = parallel.runs(items, jobs)
        assert [i for r in cut for i in r] == list(range(len(items)))
        assert len(cut) == min(jobs, len(items) // parallel.MIN_PER_WORKER)
        assert all(not items[r.start].rollback for r in cut)
    assert parallel.runs(items[:3], 4) == [range(0, 3)]  # a --phase or PR preview stays in this process


def test_workers_give_what_one_process_gives(plan, fresh_cache, monkeypatch):
    transitions = plan[:SOME]
    alone = parallel.check_all(transitions, None, jobs=1, shown=False)
    monkeypatch.setattr(scenarios, "_EVALUATIONS", {})

    def run_here(transition, policy_config):
        result = scenarios.run_transition(transition, policy_config)
        result.notes.append(f"pid {os.getpid()}")
        return result

    monkeypatch.setattr(parallel, "run_transition", run_here)
    together = parallel.check_all(transitions, None, jobs=2, shown=False)
    assert [_seen(r) for r in together] == [_seen(r) for r in alone]
    # The first check here (it imports what the program needs before the fork), the rest in two workers.
    checked_in = [{note for note in r.notes if note.startswith("pid ")} for r in together]
    assert checked_in[0] == {f"pid {os.getpid()}"}
    workers = set().union(*checked_in[1:])
    assert len(workers) == 2 and f"pid {os.getpid()}" not in workers


@pytest.mark.parametrize("jobs", [1, 2])
def test_every_check_is_announced_and_counted_done(plan, jobs, monkeypatch):
    counted = []
    monkeypatch.setattr(parallel.CheckProgress, "started", lambda self, title: counted.append(("started", title)))
    monkeypatch.setattr(parallel.CheckProgress, "finished", lambda self: counted.append(("finished", None)))
    monkeypatch.setattr(parallel, "run_transition", lambda transition, config: SimpleNamespace(transition=transition))
    parallel.check_all(plan[:SOME], None, jobs=jobs, shown=True)
    assert sorted(title for kind, title in counted if kind == "started") == sorted(t.title for t in plan[:SOME])
    assert sum(1 for kind, _ in counted if kind == "finished") == SOME


def test_a_worker_error_is_raised_as_it_was_raised(plan, monkeypatch):
    def refuse(transition, policy_config):
        if transition is plan[SOME - 1]:
            raise ConfigError(["bazbii:plan: refused in a worker"])
        return SimpleNamespace(transition=transition)

    monkeypatch.setattr(parallel, "run_transition", refuse)
    with pytest.raises(ConfigError) as raised:
        parallel.check_all(plan[:SOME], None, jobs=2, shown=False)
    assert raised.value.problems == ["bazbii:plan: refused in a worker"]


@pytest.mark.parametrize("end, code", [(lambda: os.kill(os.getpid(), signal.SIGKILL), -9), (lambda: os._exit(0), 0)])
def test_a_worker_that_dies_is_reported(plan, monkeypatch, end, code):
    def die(transition, policy_config):
        if transition is plan[SOME - 1]:
            end()
        return SimpleNamespace(transition=transition)

    monkeypatch.setattr(parallel, "run_transition", die)
    with pytest.raises(parallel.WorkerFailed, match=f"exit code {code} before sending its results"):
        parallel.check_all(plan[:SOME], None, jobs=2, shown=False)


def test_a_silent_worker_is_stopped(plan, monkeypatch):
    def hang(transition, policy_config):
        if transition is plan[SOME - 1]:
            time.sleep(60)
        return SimpleNamespace(transition=transition)

    monkeypatch.setattr(parallel, "run_transition", hang)
    monkeypatch.setattr(parallel, "STALL_SECONDS", 2)
    started = time.monotonic()
    with pytest.raises(parallel.WorkerFailed, match="no word from the preview workers for 2 s"):
        parallel.check_all(plan[:SOME], None, jobs=2, shown=False)
    assert time.monotonic() - started < 30


def test_each_side_of_a_plan_walk_is_evaluated_once(plan, fresh_cache, monkeypatch):
    # A forward step's "before" is what the previous step's update left: that evaluation, not another one.
    evaluations = []
    real = scenarios.evaluate_program
    monkeypatch.setattr(scenarios, "evaluate_program", lambda *a, **kw: evaluations.append(1) or real(*a, **kw))
    results = parallel.check_all(plan[:SOME], None, jobs=1, shown=False)
    stopped = sum(1 for r in results if r.stopped)  # a stopped update is evaluated again to show its changes
    assert len(evaluations) == SOME + stopped
    for forward, rollback in zip(plan[1:SOME:2], plan[2:SOME:2]):
        assert rollback.before_record == forward.previous_record


def test_jobs_must_be_positive(capsys):
    code, out, err = run(capsys, "--all", "--jobs", "0")
    assert code == 2 and err.strip() == "--jobs 0: give at least 1 worker process"


def test_a_dead_worker_is_one_line_and_exit_4(plan, capsys, monkeypatch):
    def die(transition, policy_config):
        if transition.title == plan[-1].title:
            os.kill(os.getpid(), signal.SIGKILL)
        return scenarios.run_transition(transition, policy_config)

    monkeypatch.setattr(parallel, "run_transition", die)
    monkeypatch.setattr(scenarios, "whole_plan", lambda side: plan[:SOME - 1] + plan[-1:])
    code, out, err = run(capsys, "--all", "--jobs", "2")
    assert code == 4 and out == ""
    assert err.splitlines()[-1].startswith("preview not checked: a preview worker process ended with exit code -9")
