"""PostgreSQL 15 servers on a rehearsal server address (127.0.1.x), as the ``postgres`` user.

``testsupport.localcluster`` binds 127.0.0.1; the rehearsal needs each server on its own
address, so this is the small equivalent: ``initdb``/``pg_ctl`` as the service user, the
listen address and port in an include file, ``trust`` for loopback only
(throwaway clusters on loopback: no password exists that could leak). The replica is built
with the production script (:func:`bazbii_db.replication.replica_setup_script`).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bazbii_db.replication import replica_setup_script, retire_primary_script
from testsupport.localcluster import _chown_to_service_user, pg_bin_dir, run_as_service_user

SETTINGS = {
    "wal_level": "replica", "max_wal_senders": "10", "max_replication_slots": "10", "hot_standby": "on",
    "wal_log_hints": "on", "wal_keep_size": "'64MB'",
    # Throwaway clusters: crash durability is not what the rehearsal measures, and fsync on a
    # shared 2-core VM only adds noise to the latency figures.
    "fsync": "off", "shared_buffers": "64MB", "max_connections": "100",
    "log_min_messages": "warning", "logging_collector": "off",
}


@dataclass
class PgServer:
    name: str          # the plan's server name (server2, server3)
    host: str          # its rehearsal address
    port: int
    datadir: Path

    def dsn(self, dbname: str = "bazbii", user: str = "postgres") -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={user} connect_timeout=5"

    def write_conf(self) -> None:
        include = self.datadir / "rehearsal.conf"
        # Every server uses the same port on its own address, so each needs its own socket directory
        # (outside the data directory: pg_rewind copies data directories and cannot read a socket).
        sockets = self.datadir.parent / f"sockets-{self.name}"
        sockets.mkdir(exist_ok=True)
        _chown_to_service_user(sockets)
        settings = dict(SETTINGS, listen_addresses=f"'{self.host}'", port=str(self.port),
                        unix_socket_directories=f"'{sockets}'")
        include.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        conf = self.datadir / "postgresql.conf"
        text = conf.read_text()
        if "include_if_exists = 'rehearsal.conf'" not in text:
            conf.write_text(text + "\ninclude_if_exists = 'rehearsal.conf'\n")
        (self.datadir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.0/8 trust\nhost replication all 127.0.0.0/8 trust\n")
        _chown_to_service_user(self.datadir)

    @classmethod
    def init(cls, name: str, host: str, port: int, workdir: Path) -> "PgServer":
        server = cls(name, host, port, workdir / f"pg-{name}")
        run_as_service_user([str(pg_bin_dir() / "initdb"), "-D", str(server.datadir), "-U", "postgres",
                             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
        server.write_conf()
        return server

    @classmethod
    def basebackup(cls, name: str, host: str, port: int, workdir: Path, primary: "PgServer", slot: str) -> "PgServer":
        """Build a streaming replica with the same script the PostgresCluster component runs on server3."""
        server = cls(name, host, port, workdir / f"pg-{name}")
        script = replica_setup_script(primary_host=primary.host, primary_port=primary.port,
                                      replication_user="postgres", slot=slot, datadir=str(server.datadir),
                                      passfile=str(workdir / f"{name}.pgpass"), pg_bin=str(pg_bin_dir()))
        # The script refuses to run without the password variable; trust auth ignores it.
        env = dict(os.environ, BAZBII_REPLICATION_PASSWORD=secrets.token_urlsafe(16))
        done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"replica setup script failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        server.write_conf()
        return server

    def start(self, timeout: float = 60) -> None:
        run_as_service_user([str(pg_bin_dir() / "pg_ctl"), "-D", str(self.datadir), "-l",
                             str(self.datadir.parent / f"pg-{self.name}.log"), "-w", "-t", str(int(timeout)), "start"],
                            timeout=timeout + 10)

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            run_as_service_user([str(pg_bin_dir() / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t",
                                 "30", "stop"], timeout=40, check=False)

    def retire(self) -> None:
        """Stop and keep stopped with the production retirement script (data directory kept)."""
        script = retire_primary_script(systemd_unit=None, debian_start_conf=None, datadir=str(self.datadir),
                                       pg_bin=str(pg_bin_dir()))
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"retire script failed ({done.returncode}): {done.stderr.strip()[-500:]}")

    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()
