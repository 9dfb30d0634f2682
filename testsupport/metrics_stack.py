"""A real metrics pipeline on loopback: an API-like service, HAProxy in front of it, Prometheus scraping both.

- :class:`ControlledService`: a threaded HTTP server whose error rate and latency
  the test sets; it exposes Prometheus text metrics (requests by status code and
  a latency histogram, the names the API's defaults in ``bazbii_plan.gates`` use).
- HAProxy 2.6 (Debian) forwards to it as backend ``api`` / server ``server2`` and
  serves its built-in Prometheus exporter (the gateway's default queries).
- Prometheus (Debian ``/usr/bin/prometheus``) with a temporary TSDB and
  ``scrape_interval: 1s`` scrapes both, labelled as the stack's declared scrape
  targets are: the gateway ``pool="server2"``, the API every pool it serves
  (``pool="server1,server2"``) and, as Kubernetes discovery labels canary
  pods, ``track="canary"``.

Nothing here is mocked; every process is started as a plain process on 127.0.0.1
and stopped by :meth:`MetricsStack.stop`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from .localcluster import free_port

PROMETHEUS = "/usr/bin/prometheus"
HAPROXY = "/usr/sbin/haproxy"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
POOL = "server2"


class ControlledService:
    """``/work`` answers 500 for ``error_percent`` of requests (exactly, per 100) after ``latency`` seconds."""

    def __init__(self) -> None:
        self.error_percent = 0
        self.latency = 0.002
        self._lock = threading.Lock()
        self._served = 0
        self._codes: dict[str, int] = {}
        self._buckets = [0] * (len(BUCKETS) + 1)
        self._sum = 0.0
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args) -> None:
                pass

            def _send(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, service.exposition().encode(), "text/plain; version=0.0.4")
                elif self.path == "/healthz":
                    self._send(200, b"ok")
                else:
                    start = time.monotonic()
                    code = service._next_code()
                    time.sleep(service.latency)
                    service._observe(code, time.monotonic() - start)
                    self._send(code, b"error" if code >= 500 else b"ok")

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # clients (HAProxy, the load loop) closing keep-alive connections is normal here

        self.server = Server(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def set(self, *, error_percent: int, latency: float) -> None:
        with self._lock:
            self.error_percent, self.latency, self._served = error_percent, latency, 0

    def restart(self) -> None:
        """Its counters start again, as a new pod's do: no ``code`` series until a request has that code."""
        with self._lock:
            self._codes.clear()

    def _next_code(self) -> int:
        with self._lock:
            index = self._served
            self._served += 1
            # Errors spread evenly (Bresenham), not bunched at the start of each hundred: exactly
            # error_percent of every 100 requests, none among the very first ones of a phase.
            rate = self.error_percent
            return 500 if (index * rate + 50) // 100 > ((index - 1) * rate + 50) // 100 else 200

    def _observe(self, code: int, seconds: float) -> None:
        with self._lock:
            self._codes[str(code)] = self._codes.get(str(code), 0) + 1
            self._buckets[bisect_left(BUCKETS, seconds)] += 1
            self._sum += seconds

    def exposition(self) -> str:
        with self._lock:
            lines = ["# TYPE http_requests_total counter"]
            lines += [f'http_requests_total{{code="{c}"}} {n}' for c, n in sorted(self._codes.items())]
            lines += histogram_lines("http_request_duration_seconds", BUCKETS, self._buckets, self._sum)
            return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def histogram_lines(name: str, bounds, counts, total_s: float) -> list[str]:
    """A histogram in Prometheus's text format, from the count in each bucket (``counts`` has one more
    than ``bounds``: the observations over the last bound) and the sum of the observations."""
    lines, cumulative = [f"# TYPE {name} histogram"], 0
    for bound, count in zip(bounds, counts):
        cumulative += count
        lines.append(f'{name}_bucket{{le="{bound:g}"}} {cumulative}')
    cumulative += counts[len(bounds)]
    lines += [f'{name}_bucket{{le="+Inf"}} {cumulative}', f"{name}_sum {total_s}", f"{name}_count {cumulative}"]
    return lines


def start_prometheus(workdir: Path, scrape_interval_s: float, jobs: dict[str, tuple[str, dict]], log) -> tuple:
    """A real Prometheus (Debian's binary) with its TSDB in ``workdir``, scraping each job's target
    (``{job: ("127.0.0.1:port", labels)}``) every ``scrape_interval_s``; returns (process, its URL)."""
    port = free_port()
    interval = f"{scrape_interval_s:g}s"
    static = "".join(f"""  - job_name: {job}
    static_configs:
      - targets: ["{target}"]
        labels: {{{", ".join(f'{k}: "{v}"' for k, v in labels.items())}}}
""" for job, (target, labels) in jobs.items())
    (workdir / "prometheus.yml").write_text(f"""
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
scrape_configs:
{static}""")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def scraped(prometheus_url: str, jobs: int) -> bool:
    """Prometheus holds a sample of ``jobs`` targets, all up."""
    try:
        response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": "up == 1"}, timeout=1)
        return len(response.json()["data"]["result"]) == jobs
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready within {timeout:.0f} s")


@dataclass
class MetricsStack:
    service: ControlledService
    gateway_url: str
    prometheus_url: str
    workdir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def drive(self, seconds: float, *, threads: int = 2, max_requests: int | None = None,
              stop: threading.Event | None = None) -> int:
        """Send real requests through HAProxy for ``seconds`` (or until ``max_requests`` or ``stop``); returns how many."""
        sent = [0]
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def loop() -> None:
            with httpx.Client(base_url=self.gateway_url, timeout=5) as client:
                while time.monotonic() < deadline and not (stop and stop.is_set()):
                    with lock:
                        if max_requests is not None and sent[0] >= max_requests:
                            return
                        sent[0] += 1
                    client.get("/work")

        workers = [threading.Thread(target=loop) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return sent[0]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.service.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_metrics_stack(first_sample_timeout: float = 30.0) -> MetricsStack:
    """Service, HAProxy and Prometheus on free loopback ports; returns once Prometheus holds a sample of both."""
    workdir = Path(tempfile.mkdtemp(prefix="bazbii-metrics-"))
    service = ControlledService()
    lb_port, exporter_port = free_port(), free_port()
    (workdir / "haproxy.cfg").write_text(f"""
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend lb
    bind 127.0.0.1:{lb_port}
    default_backend api
frontend metrics
    bind 127.0.0.1:{exporter_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
backend api
    server {POOL} 127.0.0.1:{service.port}
""")
    stack = MetricsStack(service, f"http://127.0.0.1:{lb_port}", "", workdir)
    try:
        log = open(workdir / "processes.log", "wb")
        stack.processes.append(subprocess.Popen([HAPROXY, "-W", "-db", "-f", str(workdir / "haproxy.cfg")],
                                                stdout=log, stderr=subprocess.STDOUT))
        prometheus, stack.prometheus_url = start_prometheus(workdir, 1, {
            "gateway": (f"127.0.0.1:{exporter_port}", {"pool": POOL, "server": POOL}),
            "api": (f"127.0.0.1:{service.port}", {"pool": f"server1,{POOL}", "server": POOL, "track": "canary"})}, log)
        stack.processes.append(prometheus)

        # With an empty TSDB the first sample is queryable ~5.5 s after launch (discovery tick).
        wait_until(lambda: scraped(stack.prometheus_url, 2), first_sample_timeout,
              "Prometheus first sample of the gateway and the service")
    except BaseException:
        stack.stop()
        raise
    return stack
