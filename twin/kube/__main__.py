"""``python -m twin.kube``: run a control plane until SIGTERM or Ctrl-C.

    python -m twin.kube --bin DIR [--state-dir DIR] [--address 127.0.0.1] [--port N]
                        [--service-cidr CIDR] [--node-monitor-grace-seconds N]

Prints one JSON line once every component is healthy (``server``, ``kubeconfig``, ``state_dir``,
``start_seconds``), then waits; on SIGTERM/SIGINT it stops every component and exits 0. A start that
fails prints the reason and exits 1. ``--bin`` defaults to ``$BAZBII_KUBE_BIN``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from twin.kube.control import DEFAULT_SERVICE_CIDR, ControlPlane


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twin.kube", description=__doc__.splitlines()[0])
    parser.add_argument("--bin", help="directory of etcd and the Kubernetes binaries (default: $BAZBII_KUBE_BIN)")
    parser.add_argument("--state-dir", type=Path, help="kept after the stop (default: a temporary one, removed)")
    parser.add_argument("--address", default="127.0.0.1", help="loopback address every component listens on")
    parser.add_argument("--port", type=int, help="the API server's secure port (default: a free one)")
    parser.add_argument("--service-cidr", default=DEFAULT_SERVICE_CIDR)
    parser.add_argument("--node-monitor-grace-seconds", type=int, default=40)
    args = parser.parse_args(argv)

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        plane = ControlPlane.start(args.bin, state_dir=args.state_dir, address=args.address, api_port=args.port,
                                   service_cidr=args.service_cidr,
                                   node_monitor_grace_seconds=args.node_monitor_grace_seconds)
    except Exception as exc:
        print(f"twin.kube: control plane did not start: {exc}", file=sys.stderr)
        return 1
    with plane:
        print(json.dumps({"server": plane.server, "kubeconfig": str(plane.kubeconfig),
                          "state_dir": str(plane.state_dir), "start_seconds": round(plane.start_seconds, 2)}),
              flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
