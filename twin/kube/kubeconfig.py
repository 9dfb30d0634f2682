"""Kubeconfig files: written self-contained (certificates embedded), read back for our own API client.

Embedded data, not file paths: the admin kubeconfig's *contents* are what the Pulumi Kubernetes
provider gets as ``kubernetes:kubeconfig``, and a copy stays valid wherever it is moved.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from twin.kube.pki import KeyPair


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def render(server: str, ca_cert: Path, client: KeyPair, *, user: str, cluster: str = "bazbii-twin") -> str:
    context = f"{user}@{cluster}"
    return yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}],
        "users": [{"name": user, "user": {"client-certificate-data": _b64(client.cert),
                                          "client-key-data": _b64(client.key)}}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }, sort_keys=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)
    return path


@dataclass(frozen=True)
class Credentials:
    """The current context of a kubeconfig: where the API is and the PEM bytes to reach it."""

    server: str
    ca_pem: Optional[bytes]
    cert_pem: bytes
    key_pem: bytes


def _pem(entry: dict, key: str, base: Path) -> Optional[bytes]:
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        return (base / entry[key]).read_bytes()  # a relative path is relative to the kubeconfig
    return None


def load(path: Path) -> Credentials:
    """The current context's server, CA and client certificate (embedded data or file paths)."""
    config = yaml.safe_load(path.read_text())
    by_name = lambda kind: {item["name"]: item[kind[:-1]] for item in config.get(kind) or []}  # noqa: E731
    context = by_name("contexts")[config["current-context"]]
    cluster, user = by_name("clusters")[context["cluster"]], by_name("users")[context["user"]]
    cert, key = _pem(user, "client-certificate", path.parent), _pem(user, "client-key", path.parent)
    if cert is None or key is None:
        raise ValueError(f"{path}: the current context's user has no client certificate (the only auth supported)")
    return Credentials(cluster["server"], _pem(cluster, "certificate-authority", path.parent), cert, key)
