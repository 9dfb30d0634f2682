"""The twin's certificates, made with the ``openssl`` CLI (the venv has no ``cryptography``).

One CA per control plane signs the API server's serving certificate and the client certificates
(the admin user in ``system:masters``, the controller-manager, the scheduler); a separate key pair
signs and verifies service-account tokens. P-256 keys: a fraction of RSA's generation time.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

VALID_DAYS = 3650
ADMIN_USER = "bazbii-twin-admin"
MASTERS_GROUP = "system:masters"  # bound to cluster-admin by the bootstrap RBAC policy


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPki:
    ca: KeyPair
    apiserver: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    scheduler: KeyPair
    service_account_key: Path  # private: signs tokens (apiserver), legacy token secrets (controller-manager)
    service_account_pub: Path  # public: verifies them


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[-2000:]}")


def _subject(common_name: str, organization: Optional[str]) -> str:
    return (f"/O={organization}" if organization else "") + f"/CN={common_name}"


def _certificate(directory: Path, name: str, common_name: str, extensions: dict[str, str], *,
                 organization: Optional[str] = None, ca: Optional[KeyPair] = None) -> KeyPair:
    """A new P-256 key and its certificate: self-signed without ``ca``, else signed by it."""
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    # Our own config: the system one would add its v3_ca section (CA:TRUE) to every `req -x509`.
    config = directory / f"{name}.cnf"
    config.write_text("[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n[ext]\n"
                      + "".join(f"{key} = {value}\n" for key, value in extensions.items()))
    signer = ["-CA", str(ca.cert), "-CAkey", str(ca.key)] if ca else []
    _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(pair.key), "-out", str(pair.cert), "-days", str(VALID_DAYS),
             "-subj", _subject(common_name, organization), "-config", str(config), "-extensions", "ext", *signer)
    pair.key.chmod(0o600)
    config.unlink()
    return pair


def _client(directory: Path, name: str, user: str, ca: KeyPair, group: Optional[str] = None) -> KeyPair:
    return _certificate(directory, name, user, {
        "basicConstraints": "critical,CA:FALSE",
        "keyUsage": "critical,digitalSignature",
        "extendedKeyUsage": "clientAuth",
    }, organization=group, ca=ca)


def make_cluster_pki(directory: Path, *, server_ips: Sequence[str], server_names: Sequence[str]) -> ClusterPki:
    """Every certificate and key one control plane needs, written under ``directory`` (keys 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _certificate(directory, "ca", "bazbii-twin-ca", {
        "basicConstraints": "critical,CA:TRUE",
        "keyUsage": "critical,keyCertSign,cRLSign,digitalSignature",
    })
    alt_names = ",".join([*(f"IP:{ip}" for ip in server_ips), *(f"DNS:{name}" for name in server_names)])
    apiserver = _certificate(directory, "apiserver", "kube-apiserver", {
        "basicConstraints": "critical,CA:FALSE",
        "keyUsage": "critical,digitalSignature",
        "extendedKeyUsage": "serverAuth",
        "subjectAltName": alt_names,
    }, ca=ca)
    sa_key, sa_pub = directory / "service-account.key", directory / "service-account.pub"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(sa_key))
    sa_key.chmod(0o600)
    _openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))
    return ClusterPki(
        ca=ca,
        apiserver=apiserver,
        admin=_client(directory, "admin", ADMIN_USER, ca, MASTERS_GROUP),
        # The bootstrap RBAC policy has roles for exactly these user names.
        controller_manager=_client(directory, "controller-manager", "system:kube-controller-manager", ca),
        scheduler=_client(directory, "scheduler", "system:kube-scheduler", ca),
        service_account_key=sa_key,
        service_account_pub=sa_pub,
    )
