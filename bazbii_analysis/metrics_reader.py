"""The metrics reader's SSH key: it may read Prometheus through the SSH host, and do nothing else.

A pull request's preview runs the pull request's own code, so the credential it holds must not be able to
change production. The stack's ``bazbii:sshPrivateKey`` can (and Stack Read decrypts it with every other
secret), so the PR job holds a second key instead, whose public half is ``bazbii:metrics.ssh.readerPublicKey``.
The program puts it in the SSH host's ``authorized_keys`` as ::

    restrict,command="python3 $HOME/.bazbii/metrics-reader.py 'ENDPOINT'" ssh-ed25519 AAAA... bazbii-metrics-reader

``restrict`` takes away forwarding, agent, X11 and the terminal; ``command=`` makes sshd run this file
whatever the client asked for (sshd puts the request in ``SSH_ORIGINAL_COMMAND``). :func:`allowed_curl`
accepts exactly the ``curl`` command :func:`bazbii_analysis.sshtransport.curl_command` builds for the
Prometheus client's two requests (a POSTed ``/api/v1/query`` or ``/api/v1/query_range`` of ``ENDPOINT``)
and it is executed without a shell; anything else is refused with a one-line reason. PromQL cannot write.

This file is copied to the server as it is, so it imports the standard library only. The same module
builds the commands that install and remove it (the program's ``MetricsReaderAccess`` runs them).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

MARKER = "bazbii-metrics-reader"  # the comment of its authorized_keys line: how install and removal find it
SCRIPT = "metrics-reader.py"
DEFAULT_DIRECTORY = "$HOME/.bazbii"  # expanded by the login shell that runs the commands
DEFAULT_AUTHORIZED_KEYS = "$HOME/.ssh/authorized_keys"
READ_PATHS = ("/api/v1/query", "/api/v1/query_range")  # what PrometheusClient reads
MAX_TIME_SECONDS = 120.0
# The arguments curl_command writes around the URL, for a request with a form body on stdin.
_BEFORE_TIME = ["curl", "--silent", "--show-error", "--max-time"]
_AFTER_TIME = ["--request", "POST", "--output", "-", "--write-out", "\\n%{http_code}",
               "--header", "Content-Type: application/x-www-form-urlencoded", "--data-binary", "@-"]


class Refused(ValueError):
    """The command is not one of the reads this key may run."""


def allowed_curl(original_command: str, endpoint: str) -> list[str]:
    """The ``curl`` argv to run for ``original_command`` (``SSH_ORIGINAL_COMMAND``); :class:`Refused` otherwise."""
    try:
        argv = shlex.split(original_command)
    except ValueError as exc:
        raise Refused(f"not a command line: {exc}") from None
    expected = len(_BEFORE_TIME) + 1 + len(_AFTER_TIME) + 1
    if len(argv) != expected or argv[:len(_BEFORE_TIME)] != _BEFORE_TIME:
        raise Refused("only the metrics client's curl request may run with this key")
    seconds, rest, url = argv[len(_BEFORE_TIME)], argv[len(_BEFORE_TIME) + 1:-1], argv[-1]
    try:
        max_time = float(seconds)
    except ValueError:
        raise Refused(f"--max-time {seconds!r} is not a number") from None
    if not 0 < max_time <= MAX_TIME_SECONDS:
        raise Refused(f"--max-time {seconds} is outside (0, {MAX_TIME_SECONDS:g}]")
    if rest != _AFTER_TIME:
        raise Refused("only a POSTed PromQL form, answered on stdout, may be sent")
    base = endpoint.rstrip("/")
    if url not in {base + path for path in READ_PATHS}:
        raise Refused(f"{url} is not one of {', '.join(base + path for path in READ_PATHS)}")
    return argv


def main(argv: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None) -> int:
    """sshd's forced command: ``metrics-reader.py ENDPOINT``; runs the allowed curl in place of this process."""
    args = list(sys.argv[1:] if argv is None else argv)
    env: Mapping[str, str] = os.environ if environ is None else environ
    if len(args) != 1:
        print(f"{MARKER}: installed wrong: expected one argument, the metrics endpoint", file=sys.stderr)
        return 2
    try:
        curl = allowed_curl(env.get("SSH_ORIGINAL_COMMAND", ""), args[0])
    except Refused as exc:
        print(f"{MARKER}: refused: {exc}", file=sys.stderr)
        return 1
    try:
        os.execvp(curl[0], curl)  # no shell: the arguments reach curl as they were checked
    except OSError as exc:
        print(f"{MARKER}: cannot run curl: {exc.strerror}", file=sys.stderr)
    return 127  # what a shell answers for a missing command; the client says curl is not installed


# --------------------------------------------------------------------------- installing it (the program's side)
def script_text() -> str:
    return Path(__file__).read_text()


def script_digest() -> str:
    return hashlib.sha256(script_text().encode()).hexdigest()[:16]


def authorized_keys_line(public_key: str, endpoint: str, directory: str = DEFAULT_DIRECTORY) -> str:
    """The reader's line: the key (its own comment replaced by :data:`MARKER`) with ``restrict`` and the command.
    ValueError when the key or the endpoint is not what ``bazbii:metrics`` accepts for it."""
    # the config's own patterns (imported here: the copy on the server never builds a line)
    from bazbii_plan.errors import PATTERN_WORDS
    from bazbii_plan.gates import PUBLIC_KEY_PATTERN, READER_ENDPOINT_PATTERN

    for value, regex in ((public_key.strip(), PUBLIC_KEY_PATTERN), (endpoint, READER_ENDPOINT_PATTERN)):
        if not re.match(regex, value):
            raise ValueError(f"{value[:40]!r} is not {PATTERN_WORDS[regex]}")
    kind, body = public_key.split()[:2]
    return f'restrict,command="python3 {directory}/{SCRIPT} \'{endpoint}\'" {kind} {body} {MARKER}'


def _without_marked(authorized_keys: str) -> list[str]:
    """Shell lines: ``$keys`` (created 0600 in a 0700 directory when missing) copied to ``$new`` without the
    reader's lines (grep's status 1: nothing was left, which is fine)."""
    return [f'keys="{authorized_keys}"', f'new="$keys.{MARKER}.new"',
            'mkdir -p "$(dirname "$keys")"', 'chmod 700 "$(dirname "$keys")"', "umask 077", 'touch "$keys"',
            f'grep -v " {MARKER}$" "$keys" > "$new" || test $? -eq 1']


def _strict_shell() -> str:
    # Imported here, not at the top: this file is also the forced command on the server, which has the
    # standard library only; the install and remove commands are built where the program runs.
    from bazbii_plan.facts import STRICT_SHELL

    return STRICT_SHELL


def install_command(public_key: str, endpoint: str, directory: str = DEFAULT_DIRECTORY,
                    authorized_keys: str = DEFAULT_AUTHORIZED_KEYS) -> str:
    """Shell run by the host's own SSH user with :func:`script_text` on stdin: the script to ``directory``,
    then exactly one reader line in ``authorized_keys`` (a previous one replaced; every other line kept)."""
    line = authorized_keys_line(public_key, endpoint, directory)
    return "\n".join([
        f"# {MARKER} {script_digest()}",  # a changed script changes the command: the update runs it again
        _strict_shell(),
        *_without_marked(authorized_keys),
        f'mkdir -p "{directory}"',
        f'cat > "{directory}/{SCRIPT}.new"',
        f'chmod 0755 "{directory}/{SCRIPT}.new"',
        f'mv -f "{directory}/{SCRIPT}.new" "{directory}/{SCRIPT}"',
        f"printf '%s\\n' {shlex.quote(line)} >> \"$new\"",
        'mv -f "$new" "$keys"',
    ])


def remove_command(directory: str = DEFAULT_DIRECTORY, authorized_keys: str = DEFAULT_AUTHORIZED_KEYS) -> str:
    """Shell: the reader's line out of ``authorized_keys`` (every other line kept), the script deleted."""
    return "\n".join([_strict_shell(), *_without_marked(authorized_keys), 'mv -f "$new" "$keys"',
                      f'rm -f "{directory}/{SCRIPT}"'])


if __name__ == "__main__":
    sys.exit(main())
