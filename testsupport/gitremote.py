"""A real git remote for tests: a bare repository under a temporary directory, and clones of it.

What a GitHub repository is to the workflows (the remote whose ``main`` names what is applied), without
GitHub: ``git push``/``fetch`` over the local transport, the same commands and refusals (a non-fast-forward
push is rejected).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Optional

AUTHOR = {"GIT_AUTHOR_NAME": "operator", "GIT_AUTHOR_EMAIL": "operator@example.com",
          "GIT_COMMITTER_NAME": "operator", "GIT_COMMITTER_EMAIL": "operator@example.com"}


def git(cwd: Path, *args: str, stdin: Optional[str] = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **AUTHOR, "GIT_CONFIG_NOSYSTEM": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {cwd}: {done.stderr.strip()}")
    return done.stdout


def bare_remote(root: Path) -> Path:
    """An empty bare repository whose default branch is main."""
    remote = root / "origin.git"
    remote.mkdir(parents=True)
    git(remote, "init", "--quiet", "--bare", "--initial-branch=main")
    return remote


def clone(remote: Path, dest: Path) -> Path:
    git(dest.parent, "clone", "--quiet", str(remote), dest.name)
    return dest


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    """Write ``files`` (path -> text) in ``repo``, commit them all, return the commit."""
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "--", *files)
    git(repo, "commit", "--quiet", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def show(remote: Path, ref: str, path: str) -> str:
    return git(remote, "show", f"{ref}:{path}")
