"""A one-step rollback as a git commit: ``main`` names what is applied, so the rollback goes through it.

The watch never runs ``pulumi`` itself. It writes the previous step into the stack file of the remote
``main`` (one edited line, :func:`bazbii_plan.stackfile.set_config_value`) as a commit built with git's
plumbing on top of the fetched ``main`` (the checkout it runs in is not touched), then either pushes it to
``main`` (``commit``; the apply workflow then applies ``main``) or to a branch of its own for a pull
request (``pull-request``). The push is never forced: when ``main`` moved meanwhile, nothing is changed and
the watch says so.

Before that it refuses, with one line, when ``main`` no longer names the step it watched (someone moved on
or already rolled back). :meth:`GitRecord.last_change` tells whether the pointer's last change on ``main``
moved it back: a rollback is not rolled back further automatically (the watch alerts instead).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import yaml

from bazbii_plan.stackfile import set_config_value

DEFAULT_AUTHOR = ("bazbii watch", "bazbii-watch@users.noreply.github.com")
WATCH_REF = "refs/bazbii-watch/main"  # where the fetched main is kept (never a branch of the checkout)


class RollbackRefused(Exception):
    """Rolling back now would not be the right change (main moved on); one-line message, nothing changed."""


class GitFailed(Exception):
    """A git command failed (one-line message)."""


@dataclass(frozen=True)
class StepRollback:
    stack_file: str  # path of the stack file in the repository, e.g. Pulumi.prod.yaml
    track: str
    key: str  # bazbii:phase
    from_step: str
    to_step: str
    reasons: tuple[str, ...] = ()

    def title(self) -> str:
        return f"Roll back {self.track}: {self.key} {self.from_step} -> {self.to_step}"

    def message(self) -> str:
        lines = [self.title(), "",
                 f"bazbii watch measured a breach of the rollback triggers at {self.track} step {self.from_step!r}",
                 "and sets the previous step; the apply workflow applies it from main.", ""]
        return "\n".join(lines + [f"    {reason}" for reason in self.reasons]) + "\n"


def _value(text: str, key: str) -> Optional[str]:
    document = yaml.safe_load(text) or {}
    value = (document.get("config") or {}).get(key)
    return None if value is None else str(value)


@dataclass
class GitRecord:
    """The repository whose ``branch`` on ``remote`` names what is applied, through a local clone ``repo``."""

    repo: Path
    remote: str = "origin"
    branch: str = "main"

    def git(self, *args: str, stdin: Optional[str] = None, env: Optional[dict] = None) -> str:
        done = subprocess.run(["git", "-C", str(self.repo), *args], input=stdin, capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, timeout=120)
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise GitFailed(f"git {args[0]}: {lines[-1] if lines else f'exit {done.returncode}'}")
        return done.stdout

    def fetch(self) -> str:
        """Fetch the remote branch (into a ref of the watch's own); its commit."""
        self.git("fetch", "--quiet", self.remote, f"+refs/heads/{self.branch}:{WATCH_REF}")
        return self.git("rev-parse", WATCH_REF).strip()

    def file_at(self, commit: str, path: str) -> str:
        return self.git("show", f"{commit}:{path}")

    def value_at(self, commit: str, path: str, key: str) -> Optional[str]:
        return _value(self.file_at(commit, path), key)

    def last_change(self, commit: str, path: str, key: str) -> Optional[tuple[Optional[str], Optional[str]]]:
        """``(before, after)`` of the most recent commit up to ``commit`` that changed ``key`` in ``path``
        (None: no change within the history at hand, e.g. a shallow clone)."""
        after = self.value_at(commit, path, key)
        for sha in self.git("log", "--format=%H", commit, "--", path).split()[1:]:
            value = self.value_at(sha, path, key)
            if value != after:
                return value, after
        return None

    def commit_rollback(self, parent: str, rollback: StepRollback, author: Sequence[str] = DEFAULT_AUTHOR) -> str:
        """A commit on ``parent`` whose stack file names ``rollback.to_step``; not on any branch yet."""
        text = self.file_at(parent, rollback.stack_file)
        current = _value(text, rollback.key)
        if current != rollback.from_step:
            raise RollbackRefused(f"{self.branch} names {rollback.key} = {current} now, not {rollback.from_step!r}: "
                                  "it moved on since this step was applied; nothing was rolled back")
        try:
            edited = set_config_value(text, rollback.key, rollback.from_step, rollback.to_step)
        except ValueError as exc:
            raise RollbackRefused(f"{rollback.stack_file}: {exc}") from None
        mode, _kind, _blob = self.git("ls-tree", parent, "--", rollback.stack_file).split("\t")[0].split()
        blob = self.git("hash-object", "-w", "--stdin", stdin=edited).strip()
        with tempfile.TemporaryDirectory(prefix="bazbii-watch-index-") as scratch:
            index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            self.git("read-tree", parent, env=index)
            self.git("update-index", "--cacheinfo", f"{mode},{blob},{rollback.stack_file}", env=index)
            tree = self.git("write-tree", env=index).strip()
        name, email = author
        people = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                  "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
        return self.git("commit-tree", tree, "-p", parent, "-F", "-", stdin=rollback.message(), env=people).strip()

    def push(self, commit: str, branch: str) -> None:
        """Push ``commit`` to ``branch`` of the remote, fast-forward only (a moved branch refuses it)."""
        self.git("push", "--quiet", self.remote, f"{commit}:refs/heads/{branch}")
