"""A stand-in for the GitHub REST API at the boundary ``watch`` calls (GitHub cannot be reached from here).

It serves exactly the calls :mod:`bazbii_analysis.github` makes, the way GitHub answers them, on a free
loopback port, and records every call (method, path, JSON body, whether the bearer token was the expected
one): list open issues by label, open an issue, comment on one, open a pull request, dispatch a workflow.
Anything else answers 404, as GitHub does for a route it does not have. The test points the watch at it
with ``GITHUB_API_URL``.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit


@dataclass
class Call:
    method: str
    path: str
    body: Any
    authorized: bool


@dataclass
class GitHubStandIn:
    repo: str
    token: str
    calls: list[Call] = field(default_factory=list)
    issues: list[dict] = field(default_factory=list)
    comments: dict[int, list[str]] = field(default_factory=dict)
    pulls: list[dict] = field(default_factory=list)
    dispatches: list[dict] = field(default_factory=list)
    _server: Optional[ThreadingHTTPServer] = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """What a workflow job gives the watch."""
        return {"GITHUB_API_URL": self.url, "GITHUB_REPOSITORY": self.repo, "GITHUB_TOKEN": self.token}

    def handle(self, method: str, raw_path: str, body: Any, authorization: str) -> tuple[int, Any]:
        url = urlsplit(raw_path)
        authorized = authorization == f"Bearer {self.token}"
        self.calls.append(Call(method, url.path, body, authorized))
        if not authorized:
            return 401, {"message": "Bad credentials"}
        prefix = f"/repos/{self.repo}"
        if not url.path.startswith(prefix + "/"):
            return 404, {"message": "Not Found"}
        path = url.path[len(prefix):]
        base = f"https://github.example/{self.repo}"
        if method == "GET" and path == "/issues":
            query = parse_qs(url.query)
            label = (query.get("labels") or [""])[0]
            return 200, [i for i in self.issues if i["state"] == "open" and (not label or label in i["labels"])]
        if method == "POST" and path == "/issues":
            number = len(self.issues) + len(self.pulls) + 1
            issue = {"number": number, "title": body["title"], "body": body.get("body", ""), "state": "open",
                     "labels": list(body.get("labels") or []), "html_url": f"{base}/issues/{number}"}
            self.issues.append(issue)
            return 201, {**issue, "labels": [{"name": n} for n in issue["labels"]]}
        match = re.fullmatch(r"/issues/(\d+)/comments", path)
        if method == "POST" and match:
            number = int(match.group(1))
            if not any(i["number"] == number for i in self.issues):
                return 404, {"message": "Not Found"}
            self.comments.setdefault(number, []).append(body["body"])
            return 201, {"html_url": f"{base}/issues/{number}#comment"}
        if method == "POST" and path == "/pulls":
            number = len(self.issues) + len(self.pulls) + 1
            pull = {"number": number, "head": body["head"], "base": body["base"], "title": body["title"],
                    "body": body.get("body", ""), "html_url": f"{base}/pull/{number}"}
            self.pulls.append(pull)
            return 201, pull
        match = re.fullmatch(r"/actions/workflows/([^/]+)/dispatches", path)
        if method == "POST" and match:
            self.dispatches.append({"workflow": match.group(1), "ref": body.get("ref")})
            return 204, None
        return 404, {"message": "Not Found"}

    def start(self) -> "GitHubStandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw.strip() else None
                status, answer = standin.handle(self.command, self.path, body, self.headers.get("Authorization", ""))
                payload = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
