"""``python -m twin.kube.health --listen IP:PORT --module MODULE``: run MODULE as ``__main__``, answering probes.

The program probes every Deployment's container on its port (readiness: ``GET <readinessPath>``,
liveness: a TCP connection); the rehearsal's worker serves no HTTP. This runs the module in this
process (its signal handlers, its exit code) while a daemon thread answers every GET on IP:PORT
with 200 ``ok``: the probes then say the process is up, not that its work succeeds.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:  # probes every few seconds: not worth a log line each
        pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m twin.kube.health", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="IP:PORT")
    parser.add_argument("--module", required=True)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True, name="health").start()
    sys.argv = [args.module]
    runpy.run_module(args.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
