"""One container of a pod as a local process: start, probes, the kubelet's stop sequence, its status.

The process runs in its own session (process group) and dies with the agent (``PR_SET_PDEATHSIG``).
Stopping follows the kubelet: the ``preStop`` hook (``sleep``, ``exec`` or ``httpGet``) within the
grace period, then SIGTERM to the program, then SIGKILL to its whole group at the deadline (at least
2 s after a hook, the kubelet's minimum). When the program exits, whatever it left in its group is
killed, as a container's PID namespace would be. Output goes to
``<pod dir>/<container>/<restartCount>.log`` (the layout of the kubelet's /var/log/pods).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import signal
import time
from pathlib import Path
from typing import Callable, Optional

from twin.kube import probes
from twin.kube.procs import die_with_parent, signal_group

log = logging.getLogger("twin.kube.container")

MIN_GRACE_AFTER_HOOK = 2.0
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0  # the kubelet's are 10 s and 300 s: too slow for tests


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ContainerRunner:
    def __init__(self, spec: dict, log_dir: Path, on_change: Callable[[], None]):
        self.spec = spec
        self.name = spec["name"]
        self.log_dir = log_dir
        self.on_change = on_change
        self.restart_count = 0
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.process: Optional[asyncio.subprocess.Process] = None
        self.target: Optional[probes.Target] = None
        self.probers: dict[str, probes.Prober] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopping: Optional[asyncio.Task] = None
        self.exit_code: Optional[int] = None
        self.restart_at = 0.0  # monotonic time before which a restart waits (back-off)
        self.ever_started = False

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def started(self) -> bool:
        startup = self.probers.get("startup")
        return self.running and (startup is None or startup.passing)

    @property
    def ready(self) -> bool:
        readiness = self.probers.get("readiness")
        # Probed until the process exits, also while it stops (the kubelet's way): a terminating pod leaves
        # the endpoints through its deletionTimestamp, not through readiness.
        return self.started and (readiness is None or readiness.passing)

    @property
    def unhealthy(self) -> bool:
        """Liveness failed, or the startup probe gave up: the kubelet kills and restarts the container."""
        liveness, startup = self.probers.get("liveness"), self.probers.get("startup")
        if startup is not None and not startup.passing:
            return startup.gave_up
        return liveness is not None and not liveness.passing

    def wait(self, reason: str, message: str = "") -> None:
        waiting = {"reason": reason, **({"message": message} if message else {})}
        if self.state.get("waiting") != waiting and not self.running:
            self.state = {"waiting": waiting}

    def status(self) -> dict:
        status = {
            "name": self.name, "image": self.spec.get("image", ""), "imageID": "",
            "ready": self.ready, "started": self.started, "restartCount": self.restart_count,
            "state": self.state, "lastState": self.last_state,
        }
        if self.process is not None:
            status["containerID"] = f"process://{self.process.pid}"
        return status

    # ------------------------------------------------------------------ start
    async def start(self, argv: list[str], env: dict[str, str], cwd: str, target: probes.Target) -> None:
        if self.ever_started:
            self.restart_count += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{self.restart_count}.log", "ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
                start_new_session=True, preexec_fn=die_with_parent)
        self.ever_started = True
        self.exit_code = None
        self._stopping = None
        self.target = target
        target.pid = self.process.pid
        started_at = now_rfc3339()
        self.state = {"running": {"startedAt": started_at}}
        self.probers = {kind: probes.Prober(kind, self.spec[f"{kind}Probe"], target, self.on_change)
                        for kind in ("startup", "readiness", "liveness") if self.spec.get(f"{kind}Probe")}
        self._tasks = [asyncio.create_task(self._watch_exit(started_at)), asyncio.create_task(self._run_probes())]
        log.info("container %s started: pid %d: %s", self.name, self.process.pid, " ".join(argv))

    async def _run_probes(self) -> None:
        startup = self.probers.get("startup")
        if startup is not None:
            await startup.run_until_passing()
        others = [asyncio.create_task(p.run()) for kind, p in self.probers.items() if kind != "startup"]
        try:
            await asyncio.gather(*others)
        finally:
            for task in others:
                task.cancel()

    async def _watch_exit(self, started_at: str) -> None:
        code = await self.process.wait()
        signal_group(self.process.pid, signal.SIGKILL)  # what the program left behind in its group
        self.exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128+N, as a shell reports it
        self.state = {"terminated": {"exitCode": self.exit_code, "reason": "Completed" if code == 0 else "Error",
                                     "startedAt": started_at, "finishedAt": now_rfc3339(),
                                     "containerID": f"process://{self.process.pid}"}}
        self.restart_at = time.monotonic() + min(BACKOFF_FIRST * 2 ** self.restart_count, BACKOFF_MAX)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        log.info("container %s (pid %d) exited with %d", self.name, self.process.pid, self.exit_code)
        self.on_change()

    def back_off(self) -> None:
        """Between an exit and the restart: the last run becomes lastState, the container waits."""
        self.last_state = self.state
        self.state = {"waiting": {"reason": "CrashLoopBackOff", "message":
                                  f"back-off restarting failed container {self.name}"}}

    # ------------------------------------------------------------------ stop
    def stop(self, grace_seconds: float, *, pre_stop: bool = True) -> asyncio.Task:
        """Start (or join) the stop sequence; the task ends when the process is gone."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(grace_seconds, pre_stop))
        return self._stopping

    async def _stop(self, grace_seconds: float, pre_stop: bool) -> None:
        if not self.running:
            return
        deadline = time.monotonic() + grace_seconds
        hook = (self.spec.get("lifecycle") or {}).get("preStop")
        if pre_stop and hook:
            try:
                await asyncio.wait_for(probes.run_handler(hook, self.target, grace_seconds), grace_seconds)
            except asyncio.TimeoutError:
                pass
            deadline = max(deadline, time.monotonic() + MIN_GRACE_AFTER_HOOK)
        if self.running:
            try:
                os.kill(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), max(deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            signal_group(self.process.pid, signal.SIGKILL)
            await self.process.wait()
        for task in self._tasks:  # let the exit watcher record the exit
            if not task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(task), 1)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    pass

    def kill_now(self) -> None:
        if self.process is not None:
            signal_group(self.process.pid, signal.SIGKILL)
        for task in self._tasks:
            task.cancel()
