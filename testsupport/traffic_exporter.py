"""An exporter of a service's traffic at rates a test sets, for a Prometheus where no real traffic can flow.

On the twin, Prometheus runs inside a server's network namespace (where production's runs, out of the
runner's reach); the gateway and the API of the twin serve no load there. This process stands for their
exporters: every scrape adds the requests of the elapsed time at the rate, error share and latency the
control file says (JSON ``{"rate": requests/s, "errorPercent": 0..100, "latencySeconds": s}``, re-read on
each scrape), under the metric names the gates' default queries read (``bazbii_plan.gates``): HAProxy's
``haproxy_backend_http_responses_total`` and the API's ``http_request_duration_seconds`` histogram and
``http_requests_total``. Prometheus scrapes and evaluates them for real.

    python -m testsupport.traffic_exporter --listen 127.0.0.1:9101 --control /path/control.json
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from bisect import bisect_left
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from testsupport.metrics_stack import histogram_lines

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DEFAULTS = {"rate": 20.0, "errorPercent": 0.0, "latencySeconds": 0.004}


class Traffic:
    def __init__(self, control: Path):
        self.control = control
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.ok = self.errors = self.seconds = 0.0
        self.buckets = [0.0] * (len(BUCKETS) + 1)

    def settings(self) -> dict:
        try:
            return {**DEFAULTS, **json.loads(self.control.read_text())}
        except (OSError, ValueError):
            return dict(DEFAULTS)

    def advance(self) -> None:
        settings = self.settings()
        with self.lock:
            now = time.monotonic()
            requests = settings["rate"] * (now - self.last)
            self.last = now
            errors = requests * settings["errorPercent"] / 100.0
            self.errors += errors
            self.ok += requests - errors
            self.seconds += requests * settings["latencySeconds"]
            self.buckets[bisect_left(BUCKETS, settings["latencySeconds"])] += requests

    def exposition(self) -> str:
        self.advance()
        with self.lock:
            ok, errors = int(self.ok), int(self.errors)
            lines = ["# TYPE haproxy_backend_http_responses_total counter",
                     f'haproxy_backend_http_responses_total{{proxy="api",code="2xx"}} {ok}',
                     f'haproxy_backend_http_responses_total{{proxy="api",code="5xx"}} {errors}',
                     "# TYPE http_requests_total counter",
                     f'http_requests_total{{code="200"}} {ok}', f'http_requests_total{{code="500"}} {errors}']
            lines += histogram_lines("http_request_duration_seconds", BUCKETS, [int(n) for n in self.buckets],
                                     self.seconds)
        return "\n".join(lines) + "\n"


def serve(listen: str, control: Path) -> None:
    host, port = listen.rsplit(":", 1)
    traffic = Traffic(control)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args) -> None:
            pass

        def do_GET(self) -> None:
            body = traffic.exposition().encode() if self.path == "/metrics" else b"not found\n"
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--control", type=Path, required=True)
    options = parser.parse_args()
    serve(options.listen, options.control)
