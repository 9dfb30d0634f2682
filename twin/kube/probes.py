"""Container probes (startup, readiness, liveness) and lifecycle handlers, as the kubelet runs them.

A probe is ``httpGet`` (success: a status 200-399; ``host`` defaults to the pod IP, ``scheme`` HTTP
or HTTPS without verification, ``httpHeaders``), ``tcpSocket`` (a connection opens) or ``exec`` (exit
0, run with the container's environment inside its mount namespace). ``grpc`` probes are not
supported: they always fail. ``initialDelaySeconds``, ``periodSeconds``, ``timeoutSeconds``,
``successThreshold`` and ``failureThreshold`` keep the kubelet's meaning and defaults.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, Optional

import httpx

log = logging.getLogger("twin.kube.probes")


@dataclass
class Target:
    """Where a container's probes and hooks go."""

    pod_ip: str
    ports: dict[str, int]  # named container ports
    env: dict[str, str]
    cwd: str
    pid: Optional[int] = None  # the container's process: exec runs in its mount namespace

    def port(self, value) -> int:
        if isinstance(value, int) or str(value).isdigit():
            return int(value)
        if value not in self.ports:
            raise ValueError(f"no container port named {value!r}")
        return self.ports[value]


async def run_exec(command: list[str], target: Target, timeout: float) -> int:
    """Run ``command`` beside the container (same env, same mounts); its exit code (-1 on timeout)."""
    argv = list(command)
    if target.pid is not None:
        argv = ["nsenter", f"--target={target.pid}", "--mount", "--", *argv]
    process = await asyncio.create_subprocess_exec(*argv, env=target.env, cwd=target.cwd,
                                                   stdin=asyncio.subprocess.DEVNULL,
                                                   stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    try:
        return await asyncio.wait_for(process.wait(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        return -1


_http: Optional[httpx.AsyncClient] = None


def _http_client() -> httpx.AsyncClient:
    """One client for every HTTP probe and hook (a client per probe would build a TLS context each time).

    No keep-alive, as the kubelet's prober: every probe opens a new connection, like a new client would.
    """
    global _http
    if _http is None:
        _http = httpx.AsyncClient(verify=False, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))
    return _http


async def http_get(action: dict, target: Target, timeout: float) -> bool:
    scheme = action.get("scheme", "HTTP").lower()
    host = action.get("host") or target.pod_ip
    url = f"{scheme}://{host}:{target.port(action.get('port'))}{action.get('path') or '/'}"
    headers = {h["name"]: h["value"] for h in action.get("httpHeaders") or []}
    response = await _http_client().get(url, headers=headers, timeout=timeout)
    return 200 <= response.status_code < 400


async def tcp_open(action: dict, target: Target, timeout: float) -> bool:
    host = action.get("host") or target.pod_ip
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, target.port(action.get("port"))), timeout)
    writer.close()
    return True


async def probe_once(probe: dict, target: Target) -> bool:
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            return await http_get(probe["httpGet"], target, timeout)
        if "tcpSocket" in probe:
            return await tcp_open(probe["tcpSocket"], target, timeout)
        if "exec" in probe:
            return await run_exec(probe["exec"]["command"], target, timeout) == 0
        return False  # grpc: not supported
    except (OSError, ValueError, asyncio.TimeoutError, httpx.HTTPError):
        return False


class Prober:
    """One probe of one container, run every period; ``passing`` flips after the thresholds.

    ``passing`` starts False for startup and readiness probes and True for liveness (a container is
    alive until proven otherwise); ``on_change`` runs at every flip.
    """

    def __init__(self, kind: str, probe: dict, target: Target, on_change: Callable[[], None]):
        self.kind, self.probe, self.target, self.on_change = kind, probe, target, on_change
        self.passing = kind == "liveness"
        self.gave_up = False  # a startup probe that reached its failureThreshold
        self._streak = 0  # consecutive results that disagree with `passing`

    def _period(self) -> float:
        return float(self.probe.get("periodSeconds") or 10)

    async def run_until_passing(self) -> None:
        """The startup probe: until its first success, or until ``failureThreshold`` failures (``gave_up``)."""
        await asyncio.sleep(float(self.probe.get("initialDelaySeconds") or 0))
        failures = 0
        while not await probe_once(self.probe, self.target):
            failures += 1
            if failures >= int(self.probe.get("failureThreshold") or 3):
                self.gave_up = True
                self.on_change()
                return
            await asyncio.sleep(self._period())
        self.passing = True
        self.on_change()

    async def run(self) -> None:
        await asyncio.sleep(float(self.probe.get("initialDelaySeconds") or 0))
        while True:
            result = await probe_once(self.probe, self.target)
            if result == self.passing:
                self._streak = 0
            else:
                self._streak += 1
                needed = int(self.probe.get("successThreshold") or 1) if result else \
                    int(self.probe.get("failureThreshold") or 3)
                if self._streak >= needed:
                    self.passing, self._streak = result, 0
                    log.info("%s probe of pid %s now %s", self.kind, self.target.pid,
                             "passing" if result else "failing")
                    self.on_change()
            await asyncio.sleep(self._period())


async def run_handler(handler: dict, target: Target, timeout: float) -> None:
    """A lifecycle handler (``preStop``/``postStart``): ``sleep``, ``exec`` or ``httpGet``; failures are ignored."""
    try:
        if "sleep" in handler:
            await asyncio.sleep(min(float(handler["sleep"]["seconds"]), timeout))
        elif "exec" in handler:
            await run_exec(handler["exec"]["command"], target, timeout)
        elif "httpGet" in handler:
            await http_get(handler["httpGet"], target, timeout)
    except (OSError, ValueError, asyncio.TimeoutError, httpx.HTTPError) as exc:
        log.info("lifecycle handler failed: %s", exc)
