"""Throwaway PostgreSQL clusters and PgBouncer instances on 127.0.0.1.

Used by the test suite and the benchmarks: they need real servers (a primary,
a streaming replica built with pg_basebackup, a PgBouncer in front), started
as a non-root user because PostgreSQL refuses to run as root.

Nothing here is a mock: every cluster is a real ``initdb`` + ``pg_ctl`` run of
Debian's PostgreSQL 15 binaries.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bazbii_plan.facts import PGBOUNCER_SERVER_LOGIN_RETRY_SECONDS

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin",)
PGBOUNCER_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
# PostgreSQL must not run as root; Debian's package creates this account.
SERVICE_USER = "postgres"


def pg_bin_dir() -> Path:
    override = os.environ.get("BAZBII_PG_BIN")
    for candidate in ((override,) if override else ()) + PG_BIN_CANDIDATES:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries (initdb) not found; install Debian's postgresql package")


def pgbouncer_binary() -> Path:
    for candidate in PGBOUNCER_CANDIDATES:
        if Path(candidate).exists():
            return Path(candidate)
    found = shutil.which("pgbouncer")
    if found:
        return Path(found)
    raise RuntimeError("pgbouncer not found; install Debian's pgbouncer package")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_service_user(argv: list[str]) -> list[str]:
    """Prefix a command so it runs as the non-root service user when we are root."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", SERVICE_USER, "--", *argv]


def _chown_to_service_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(SERVICE_USER)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def run_as_service_user(argv: list[str], timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        _as_service_user(argv), timeout=timeout, check=check, capture_output=True, text=True, **kwargs
    )


def make_workdir(prefix: str = "bazbii-pg-") -> Path:
    """A temp directory the service user can write into."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    _chown_to_service_user(path)
    return path


@dataclass
class LocalCluster:
    """One PostgreSQL server on 127.0.0.1 with its own data directory."""

    datadir: Path
    port: int
    superuser: str = "postgres"
    password: str = "postgres-test-password"
    extra_conf: dict[str, str] = field(default_factory=dict)

    # --- lifecycle -------------------------------------------------------
    @classmethod
    def init(cls, workdir: Path, name: str = "primary", port: int | None = None, **conf: str) -> "LocalCluster":
        datadir = workdir / name
        cluster = cls(datadir=datadir, port=port or free_port(), extra_conf=dict(conf))
        pwfile = workdir / f"{name}.pw"
        pwfile.write_text(cluster.password + "\n")
        _chown_to_service_user(pwfile)
        run_as_service_user(
            [
                str(pg_bin_dir() / "initdb"),
                "-D", str(datadir),
                "-U", cluster.superuser,
                "--pwfile", str(pwfile),
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )
        cluster.write_conf()
        return cluster

    def write_conf(self) -> None:
        base = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.datadir}'",
            "wal_level": "replica",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "hot_standby": "on",
            "fsync": "off",  # throwaway test clusters: durability across OS crashes is not under test
            "synchronous_commit": "on",
            "shared_buffers": "128MB",
            "max_connections": "100",
            "log_min_messages": "warning",
            "logging_collector": "off",
        }
        base.update(self.extra_conf)
        auto = self.datadir / "postgresql.auto.conf"
        # Our settings go in a conf.d include so ALTER SYSTEM (postgresql.auto.conf) still wins.
        include = self.datadir / "bazbii_test.conf"
        include.write_text("".join(f"{k} = {v}\n" for k, v in base.items()))
        conf = self.datadir / "postgresql.conf"
        text = conf.read_text()
        if "include_if_exists = 'bazbii_test.conf'" not in text:
            conf.write_text(text + "\ninclude_if_exists = 'bazbii_test.conf'\n")
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n"
        )
        for path in (include, conf, hba, auto):
            if path.exists():
                _chown_to_service_user(path)

    def start(self, timeout: float = 60) -> None:
        run_as_service_user(
            [str(pg_bin_dir() / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.datadir / "server.log"),
             "-w", "-t", str(int(timeout)), "start"],
            timeout=timeout + 10,
        )

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        if not (self.datadir / "postmaster.pid").exists():
            return
        run_as_service_user(
            [str(pg_bin_dir() / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", str(int(timeout)), "stop"],
            timeout=timeout + 10,
            check=False,
        )
        # Waiting on the pid file, not the process: PID 1 here may reap zombies late.
        deadline = time.monotonic() + timeout
        while (self.datadir / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def is_running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    # --- connection ------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None, **params: str) -> str:
        parts = {
            "host": "127.0.0.1",
            "port": str(self.port),
            "dbname": dbname,
            "user": user or self.superuser,
            "password": password if password is not None else self.password,
            "connect_timeout": "5",
        }
        parts.update(params)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def log_text(self) -> str:
        path = self.datadir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- replicas --------------------------------------------------------
    def basebackup_replica(self, workdir: Path, name: str, slot: str, port: int | None = None) -> "LocalCluster":
        """Build a streaming replica with ``pg_basebackup -R -C -S <slot>`` and return it (not started)."""
        replica = LocalCluster(datadir=workdir / name, port=port or free_port(), password=self.password,
                               extra_conf=dict(self.extra_conf))
        env = dict(os.environ, PGPASSWORD=self.password)
        run_as_service_user(
            [str(pg_bin_dir() / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.superuser,
             "-D", str(replica.datadir), "-R", "-C", "-S", slot, "-X", "stream", "--checkpoint=fast"],
            env=env,
            timeout=300,
        )
        # pg_basebackup -R writes primary_conninfo without the password; the replica needs it to reconnect.
        auto = replica.datadir / "postgresql.auto.conf"
        auto.write_text(auto.read_text().replace("user=postgres", f"user=postgres password={self.password}", 1))
        replica.write_conf()
        return replica


@dataclass
class LocalPgBouncer:
    """A PgBouncer on 127.0.0.1 in transaction-pooling mode, in front of one database."""

    workdir: Path
    port: int
    admin_user: str = "pgbouncer_admin"
    admin_password: str = "pgbouncer-test-password"
    process: subprocess.Popen | None = None

    @property
    def ini_path(self) -> Path:
        return self.workdir / "pgbouncer.ini"

    @property
    def userlist_path(self) -> Path:
        return self.workdir / "userlist.txt"

    @classmethod
    def create(cls, workdir: Path, users: dict[str, str], databases: dict[str, str], port: int | None = None,
               **settings: str) -> "LocalPgBouncer":
        """``databases`` maps alias -> connection string fragment (``host=127.0.0.1 port=N dbname=x``)."""
        bouncer = cls(workdir=workdir, port=port or free_port())
        all_users = dict(users)
        all_users[bouncer.admin_user] = bouncer.admin_password
        bouncer.userlist_path.write_text("".join(f'"{u}" "{p}"\n' for u, p in all_users.items()))
        base = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(bouncer.port),
            "auth_type": "plain",
            "auth_file": str(bouncer.userlist_path),
            "admin_users": bouncer.admin_user,
            "pool_mode": "transaction",
            "max_client_conn": "200",
            "default_pool_size": "20",
            "server_login_retry": f"{PGBOUNCER_SERVER_LOGIN_RETRY_SECONDS:g}",  # as production's pooler
            "unix_socket_dir": "",
            "logfile": str(workdir / "pgbouncer.log"),
            "pidfile": str(workdir / "pgbouncer.pid"),
            "ignore_startup_parameters": "extra_float_digits,options",
        }
        base.update(settings)
        bouncer.write_ini(databases, base)
        _chown_to_service_user(workdir)
        return bouncer

    def write_ini(self, databases: dict[str, str], settings: dict[str, str]) -> None:
        text = "[databases]\n" + "".join(f"{k} = {v}\n" for k, v in databases.items())
        text += "\n[pgbouncer]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
        tmp = self.ini_path.with_suffix(".tmp")
        tmp.write_text(text)
        _chown_to_service_user(tmp)
        os.replace(tmp, self.ini_path)

    def start(self, timeout: float = 15) -> None:
        self.process = subprocess.Popen(
            _as_service_user([str(pgbouncer_binary()), str(self.ini_path)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"pgbouncer exited early; log:\n{self.log_text()}")
                time.sleep(0.05)
        raise TimeoutError(f"pgbouncer did not listen on {self.port}")

    def stop(self) -> None:
        stop_process(self.process)

    def admin_dsn(self) -> str:
        return (f"host=127.0.0.1 port={self.port} dbname=pgbouncer user={self.admin_user} "
                f"password={self.admin_password} connect_timeout=5")

    def dsn(self, dbname: str, user: str, password: str) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user} password={password} connect_timeout=5"

    def log_text(self) -> str:
        path = self.workdir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """Stop a server started as a plain child process: TERM, then KILL after ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
