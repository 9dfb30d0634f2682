"""Checking many transitions (``--all``) in worker processes, one contiguous run of the plan each.

The transitions of a plan walk are independent, except that each forward step's "before" is the previous
step's evaluation (reused, see ``scenarios.run_transition``): so each worker takes a contiguous run of them,
beginning at a forward step, and only the first step of a run costs one more evaluation. The first check
runs in this process, so the workers are forked after every import the program needs (the import floor is
paid once); they report each check as it starts and hand their results back pickled, in files of a private
temporary directory; a failure in a worker is raised here as it was raised there.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

from .report import CheckProgress
from .scenarios import Transition, TransitionResult, run_transition

# Below this many transitions a second process costs more than it saves (--phase and PR previews check 1-2).
MIN_PER_WORKER = 6
# How often a waiting parent looks whether a worker died without a word (seconds).
POLL_SECONDS = 1.0
# Workers silent this long are taken as stuck (seconds): one check takes well under one, a shadow run of its
# migration SQL a few.
STALL_SECONDS = 600.0


def default_jobs() -> int:
    """The CPUs this process may use, at most 4: each run's first step is evaluated twice, so more runs
    cost more work in all."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def runs(transitions: Sequence[Transition], jobs: int) -> list[range]:
    """``transitions`` cut into at most ``jobs`` contiguous runs of about equal length, each beginning at a
    forward step (never between a step and its rollback, which reuses the step's evaluation)."""
    count = max(1, min(jobs, len(transitions) // MIN_PER_WORKER))
    cuts = [0]
    for k in range(1, count):
        cut = round(k * len(transitions) / count)
        while 0 < cut < len(transitions) and transitions[cut].rollback:
            cut += 1
        if cuts[-1] < cut < len(transitions):
            cuts.append(cut)
    cuts.append(len(transitions))
    return [range(a, b) for a, b in zip(cuts, cuts[1:])]


class WorkerFailed(RuntimeError):
    """A worker ended without sending all its results (killed, out of memory)."""


def _work(transitions: Sequence[Transition], indices: range, policy_config: Optional[dict], out: Any,
          folder: Path) -> None:
    """Check ``indices`` in order. Each result (or the error that stopped the run) goes to a file of its own,
    written whole and then renamed; the queue carries only short notices, each written in one piece, so a
    worker killed at any moment never leaves half a message for the parent to wait on."""
    for index in indices:
        out.put(("started", index))
        try:
            _write(folder / f"{index}.result", pickle.dumps(run_transition(transitions[index], policy_config)))
            out.put(("result", index))
        except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
            _write(folder / f"{index}.error", _pickled(exc))
            out.put(("error", index))
            return


def _write(path: Path, data: bytes) -> None:
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(path)


def _pickled(exc: BaseException) -> bytes:
    """``exc`` pickled, if it survives the round trip; else a RuntimeError carrying its traceback."""
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001
        return pickle.dumps(RuntimeError("".join(traceback.format_exception(exc))))


def check_all(transitions: Sequence[Transition], policy_config: Optional[dict], jobs: int,
              shown: bool) -> list[TransitionResult]:
    """Every transition's result, in order; checked in up to ``jobs`` worker processes."""
    plan = runs(transitions, jobs)
    results: dict[int, TransitionResult] = {}
    with CheckProgress(len(transitions), shown) as bar:
        # The first check runs here: it imports what the program needs once, before the fork, and its
        # evaluation is the "before" of the step after it.
        here = plan[0] if len(plan) == 1 else plan[0][:1]
        for offset, transition in enumerate(bar.each([transitions[i] for i in here])):
            results[here[offset]] = run_transition(transition, policy_config)
        if len(plan) > 1:
            _in_workers(transitions, policy_config, [plan[0][1:], *plan[1:]], bar, results)
    return [results[index] for index in range(len(transitions))]


def _in_workers(transitions: Sequence[Transition], policy_config: Optional[dict], plan: list[range],
                bar: CheckProgress, results: dict[int, TransitionResult]) -> None:
    context = multiprocessing.get_context("fork")  # after the imports; the children run no thread of ours
    out = context.Queue()
    folder = Path(tempfile.mkdtemp(prefix="bazbii-preview-"))  # private (0700), a fresh name per run
    workers = [context.Process(target=_work, args=(transitions, indices, policy_config, out, folder), daemon=True)
               for indices in plan if indices]

    heard = time.monotonic()

    def receive() -> None:
        """Handle the next message; raise the error a worker sent, or WorkerFailed for one that died without
        a word or went silent."""
        nonlocal heard
        try:
            kind, index = out.get(timeout=POLL_SECONDS)
        except queue.Empty:
            dead = [w for w in workers if w.exitcode not in (None, 0)]
            if dead or all(w.exitcode is not None for w in workers):
                code = dead[0].exitcode if dead else 0
                raise WorkerFailed(f"a preview worker process ended with exit code {code} "
                                   "before sending its results") from None
            if time.monotonic() - heard > STALL_SECONDS:
                raise WorkerFailed(f"no word from the preview workers for {STALL_SECONDS:g} s; stopped them "
                                   "(--jobs 1 checks in one process)") from None
            return
        heard = time.monotonic()
        if kind == "error":
            raise pickle.loads((folder / f"{index}.error").read_bytes())
        if kind == "started":
            bar.started(transitions[index].title)
        else:
            results[index] = pickle.loads((folder / f"{index}.result").read_bytes())
            bar.finished()

    sys.stdout.flush()  # what is buffered here now would be written again by each child as it exits
    sys.stderr.flush()
    try:
        for worker in workers:
            worker.start()
        while len(results) < len(transitions):
            receive()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
        shutil.rmtree(folder, ignore_errors=True)
