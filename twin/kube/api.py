"""A small asynchronous Kubernetes API client (httpx, client-certificate auth) and a list+watch cache.

Only what the node agent needs: JSON requests, strategic-merge/merge patches, streaming watches, and
:class:`Reflector`, which keeps every object of one resource in memory the way client-go's informers
do (list, then watch from the list's resourceVersion; list again after an error or a 410 Gone).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import tempfile
from pathlib import Path
from typing import AsyncIterator, Callable, Optional

import httpx

from twin.kube import kubeconfig

log = logging.getLogger("twin.kube.api")

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
WATCH_SECONDS = 240  # the server ends a watch after this; we watch again from the last resourceVersion
RETRY_SECONDS = 1.0


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


# What a request may raise: the API answered an error, or could not be reached (worth another try later).
API_ERRORS = (ApiError, httpx.HTTPError)


def ssl_context(credentials: kubeconfig.Credentials) -> ssl.SSLContext:
    """TLS to the API server with the kubeconfig's client certificate.

    ``ssl`` loads a certificate chain only from files: they exist for the duration of the load, in a
    private temporary directory.
    """
    context = ssl.create_default_context()
    if credentials.ca_pem:
        context.load_verify_locations(cadata=credentials.ca_pem.decode())
    with tempfile.TemporaryDirectory(prefix="bazbii-kube-cred-") as directory:
        cert, key = Path(directory, "client.crt"), Path(directory, "client.key")
        for path, data in ((cert, credentials.cert_pem), (key, credentials.key_pem)):
            path.touch(mode=0o600)
            path.write_bytes(data)
        context.load_cert_chain(cert, key)
    return context


def object_key(obj: dict) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


class Api:
    def __init__(self, kubeconfig_path: os.PathLike):
        credentials = kubeconfig.load(Path(kubeconfig_path))
        self.server = credentials.server
        self.http = httpx.AsyncClient(base_url=credentials.server, verify=ssl_context(credentials),
                                      timeout=httpx.Timeout(30.0, connect=5.0))

    async def close(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, *, params: Optional[dict] = None, body=None,
                      content_type: str = "application/json") -> dict:
        content = None if body is None else json.dumps(body)
        response = await self.http.request(method, path, params=params, content=content,
                                           headers={"Content-Type": content_type, "Accept": "application/json"})
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, f"{method} {path}: {message}")
        return response.json() if response.content else {}

    async def get(self, path: str, **params) -> dict:
        return await self.request("GET", path, params=params or None)

    async def get_or_none(self, path: str) -> Optional[dict]:
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: dict) -> dict:
        return await self.request("POST", path, body=body)

    async def patch(self, path: str, body: dict, content_type: str = STRATEGIC_MERGE) -> dict:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str, body: Optional[dict] = None) -> dict:
        return await self.request("DELETE", path, body=body)

    async def watch(self, path: str, params: dict) -> AsyncIterator[dict]:
        """The events of one watch request, until the server ends it."""
        query = {**params, "watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SECONDS)}
        timeout = httpx.Timeout(WATCH_SECONDS + 30.0, connect=5.0)
        async with self.http.stream("GET", path, params=query, timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                raise ApiError(response.status_code, f"watch {path}: {response.text[:500]}")
            async for line in response.aiter_lines():
                if line.strip():
                    yield json.loads(line)


class Reflector:
    """Every object of one resource (``path``, e.g. ``/api/v1/pods``), kept current by list + watch.

    ``on_change(event_type, obj)`` runs for each change: ``ADDED``/``MODIFIED``/``DELETED`` (a
    relist reports what disappeared meanwhile as ``DELETED``). :attr:`synced` is set after the first list.
    """

    def __init__(self, api: Api, path: str, on_change: Callable[[str, dict], None], **params: str):
        self.api, self.path, self.on_change, self.params = api, path, on_change, params
        self.items: dict[tuple[str, str], dict] = {}
        self.synced = asyncio.Event()

    def _apply(self, event_type: str, obj: dict) -> None:
        key = object_key(obj)
        if event_type == "DELETED":
            self.items.pop(key, None)
        else:
            self.items[key] = obj
        self.on_change(event_type, obj)

    async def _relist(self) -> str:
        listing = await self.api.get(self.path, **self.params)
        fresh = {object_key(item): item for item in listing.get("items") or []}
        for key in set(self.items) - set(fresh):
            self._apply("DELETED", self.items[key])
        for item in fresh.values():
            self._apply("MODIFIED" if object_key(item) in self.items else "ADDED", item)
        self.synced.set()
        return listing["metadata"]["resourceVersion"]

    async def run(self) -> None:
        while True:
            try:
                version = await self._relist()
                while version:
                    version = await self._watch_from(version)
            except asyncio.CancelledError:
                raise
            except (*API_ERRORS, ValueError, KeyError) as exc:
                log.warning("%s: %s; listing again", self.path, exc)
            await asyncio.sleep(RETRY_SECONDS)

    async def _watch_from(self, version: str) -> Optional[str]:
        """Watch from ``version``; the version to watch from next, or None when only a relist helps (410)."""
        async for event in self.api.watch(self.path, {**self.params, "resourceVersion": version}):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                log.info("%s: watch error %s; listing again", self.path, obj.get("message"))
                return None
            version = obj.get("metadata", {}).get("resourceVersion") or version
            if kind != "BOOKMARK":
                self._apply(kind, obj)
        return version
