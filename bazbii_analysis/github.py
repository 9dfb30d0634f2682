"""The few GitHub REST calls ``watch`` makes: an alert issue (or a comment on the open one), a pull request,
a workflow dispatch.

Run from a workflow, the defaults are the job's own: ``GITHUB_API_URL``, ``GITHUB_REPOSITORY`` and the
``GITHUB_TOKEN`` the workflow grants (``issues: write``, ``pull-requests: write``, ``actions: write``). The
token is read from the environment and never printed. Every failure is :class:`GitHubError` with a one-line
message naming the call.

A pull request opened or a branch pushed with the workflow's ``GITHUB_TOKEN`` starts no other workflow
(GitHub's rule); a workflow dispatch does. That is why a rollback commit is followed by a dispatch of the
apply workflow, and why a rollback pull request needs a GitHub App token to get its preview (docs/operate.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import httpx

DEFAULT_API = "https://api.github.com"
ALERT_LABEL = "bazbii-watch"


class GitHubError(Exception):
    """A GitHub API call failed (one-line message)."""


@dataclass
class GitHub:
    repo: str  # owner/name
    token: str
    api_url: str = DEFAULT_API
    timeout: float = 15.0

    @classmethod
    def from_environment(cls, repo: Optional[str] = None, env: Mapping[str, str] = os.environ) -> Optional["GitHub"]:
        """The job's GitHub (None when no repository or token is known: alerts are then printed only)."""
        repo = repo or env.get("GITHUB_REPOSITORY")
        token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
        if not repo or not token:
            return None
        return cls(repo=repo, token=token, api_url=env.get("GITHUB_API_URL") or DEFAULT_API)

    def _call(self, method: str, path: str, body: Optional[dict] = None, params: Optional[dict] = None) -> Any:
        url = f"{self.api_url.rstrip('/')}/repos/{self.repo}{path}"
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": "2022-11-28"}
        what = f"GitHub API {method} /repos/{self.repo}{path}"
        try:
            response = httpx.request(method, url, json=body, params=params, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise GitHubError(f"{what}: {exc.__class__.__name__}: {exc}") from None
        if response.status_code >= 300:
            try:
                message = response.json().get("message", "")
            except ValueError:
                message = response.text[:200]
            raise GitHubError(f"{what} answered {response.status_code}: {message}")
        return response.json() if response.content else None

    def alert(self, title: str, body: str) -> str:
        """Comment on the open alert issue with this title, or open one; returns its URL."""
        issues = self._call("GET", "/issues", params={"state": "open", "labels": ALERT_LABEL, "per_page": 100}) or []
        for issue in issues:
            if issue.get("title") == title and "pull_request" not in issue:
                self._call("POST", f"/issues/{issue['number']}/comments", {"body": body})
                return issue["html_url"]
        return self._call("POST", "/issues", {"title": title, "body": body, "labels": [ALERT_LABEL]})["html_url"]

    def open_pull_request(self, head: str, base: str, title: str, body: str) -> str:
        return self._call("POST", "/pulls", {"head": head, "base": base, "title": title, "body": body})["html_url"]

    def dispatch_workflow(self, workflow: str, ref: str) -> None:
        self._call("POST", f"/actions/workflows/{workflow}/dispatches", {"ref": ref})
