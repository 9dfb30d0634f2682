"""``python -m twin.cloudflare --listen HOST:PORT --token-file F --account ID --zone ID=NAME [--state FILE]``

Runs the Cloudflare API emulator in the foreground until SIGINT or SIGTERM. The first line on
stdout is the API base URL (``http://HOST:PORT/client/v4``, the port filled in when 0 was asked).
A bad argument is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .server import CloudflareEmulator, ConfigurationError
from .store import StateFileError


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise argparse.ArgumentTypeError(f"{value!r} has no host")
    return host, int(port)


def parse_zone(value: str) -> tuple[str, str]:
    zone_id, sep, name = value.partition("=")
    if not sep or not zone_id or not name:
        raise argparse.ArgumentTypeError(f"{value!r} is not ID=NAME")
    return zone_id, name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twin.cloudflare",
                                     description="Cloudflare API v4 emulator (the twin's Cloudflare).")
    parser.add_argument("--listen", type=parse_listen, required=True, metavar="HOST:PORT")
    parser.add_argument("--token-file", type=Path, required=True, help="file holding the API token")
    parser.add_argument("--account", action="append", required=True, metavar="ID", help="an account it serves")
    parser.add_argument("--zone", action="append", type=parse_zone, default=[], metavar="ID=NAME",
                        help="a zone it serves")
    parser.add_argument("--state", type=Path, help="JSON file the state is loaded from and saved to")
    parser.add_argument("--verbose", action="store_true", help="log every request on stderr")
    args = parser.parse_args(argv)
    try:
        token = args.token_file.read_text().strip()
    except OSError as error:
        print(f"--token-file: {error}", file=sys.stderr)
        return 2
    host, port = args.listen
    try:
        emulator = CloudflareEmulator(token, args.account, dict(args.zone), host=host, port=port,
                                      state_file=args.state, verbose=args.verbose)
        emulator.start()
    except (ConfigurationError, StateFileError) as error:
        print(error, file=sys.stderr)
        return 2
    except OSError as error:
        print(f"--listen {host}:{port}: {error.strerror or error}", file=sys.stderr)
        return 2
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    print(emulator.url, flush=True)
    stopped.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
