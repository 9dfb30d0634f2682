"""The one convention of the operator CLIs (``python -m offline_preview`` (``./preview``), ``python -m
bazbii_db.replication``, ``python -m bazbii_db.migrations``, ``python -m bazbii_analysis.watch`` (``./watch``)).

It lives in ``bazbii_plan`` (which imports no other package of ours) so that every package's CLI can follow
it without importing another's; ``bazbii_db.cli`` re-exports it.

* Exit codes: 0 ok, 1 a check failed or the operation was refused/failed, 2 bad arguments or input,
  128 + N: stopped on request by signal N (130 SIGINT, 143 SIGTERM; :mod:`bazbii_db.stopping`), at a
  safe point, with one line on stderr saying so and how to resume: what a shell reports for a process
  a signal ended, so a caller that only looks at the status still sees a stop, not a failure.
* Connection strings come from an environment variable or a file (:func:`bazbii_db.dsn.read_dsn`),
  never from argv: argv is visible in ``ps`` and shell history.
* Output: human text by default; with ``--json`` exactly one JSON document on stdout, so a
  caller (a Pulumi ``remote.Command`` over SSH, a script) can parse it. :class:`CliParser` gives every
  parser ``--json``, and every subcommand too: ``cli --json sub`` and ``cli sub --json`` mean the same.
* A reader that closes the pipe early (``... --json | head -1``) ends the command quietly, exit 141
  (128 + SIGPIPE, what a shell reports for a process that signal ended), no traceback: :func:`run_main`.
* Every option has help text, and a duration's help names its unit (tests/docs/test_cli_help.py).
* A failure also prints **one line** on stderr saying what failed; nothing printed holds a password.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any, Callable, NoReturn, Sequence, TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED_BASE = 128  # + the signal's number


def exit_code_stopped(signum: int | None) -> int:
    """The exit status of an operation stopped on request: 128 + the signal, or 1 when no signal asked."""
    return EXIT_STOPPED_BASE + signum if signum else EXIT_FAILED


def _seconds(text: str, *, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 if zero_ok else value > 0) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds {'>= 0' if zero_ok else '> 0'}, not {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """argparse ``type`` for a duration that must be > 0 (the error names the option, exit 2)."""
    return _seconds(text, zero_ok=False)


def non_negative_seconds(text: str) -> float:
    """argparse ``type`` for a duration that may be 0."""
    return _seconds(text, zero_ok=True)


def one_line(text: str) -> str:
    """Collapse a multi-line message into one line (stderr is read line by line by CI logs)."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def emit(as_json: bool, payload: dict[str, Any], text: str, out: TextIO | None = None) -> None:
    """The command's result: one JSON document (``--json``) or the human report."""
    out = out or sys.stdout
    if as_json:
        out.write(json.dumps(payload, default=str, sort_keys=True) + "\n")
    else:
        out.write(text.rstrip("\n") + "\n")
    out.flush()


def fail(message: str, err: TextIO | None = None) -> None:
    """The one-line failure message on stderr."""
    err = err or sys.stderr
    err.write(one_line(message) + "\n")
    err.flush()


JSON_HELP = "print exactly one JSON document on stdout"


class _Subcommands(argparse._SubParsersAction):
    """Subcommands of a :class:`CliParser`: each takes ``--json`` too, without undoing one given before it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("json_default", argparse.SUPPRESS)  # absent after the subcommand: keep the parent's value
        return super().add_parser(name, **kwargs)


class CliParser(argparse.ArgumentParser):
    """argparse with the convention: ``--json`` on the command and on each of its subcommands, and a usage error
    of one line on stderr, exit 2 (not the whole usage text)."""

    def __init__(self, *args: Any, json_default: Any = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Subcommands)
        self.add_argument("--json", action="store_true", default=json_default, help=JSON_HELP)

    def error(self, message: str) -> NoReturn:
        fail(f"error: {message} (see --help)")
        raise SystemExit(EXIT_USAGE)


EXIT_PIPE_CLOSED = EXIT_STOPPED_BASE + signal.SIGPIPE


def run_main(main: Callable[[], int]) -> NoReturn:
    """``sys.exit(main())`` for a ``__main__``: a reader that closed stdout early (``| head -1``) ends the command
    quietly with exit 141 (128 + SIGPIPE), instead of a ``BrokenPipeError`` traceback."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush cannot fail and print.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_PIPE_CLOSED
    sys.exit(code)


Handler = tuple[tuple[type[BaseException], ...], int, Callable[[BaseException], str]]


def run_guarded(body: Callable[[], int], handlers: Sequence[Handler]) -> int:
    """Run a command; the first handler whose exception types match prints its one line and gives the exit code."""
    try:
        return body()
    except Exception as exc:
        for types, code, message in handlers:
            if isinstance(exc, types):
                fail(message(exc))
                return code
        raise
