"""A PgBouncer ini this user may not replace: one clear line naming the file and the permission, exit 1,
nothing half-written (issue 8: "A PermissionError on the PgBouncer ini gives a clear message").

Run as root, the tests drop the *effective* uid to the non-root ``postgres`` user around the call
(root ignores file modes), against a root-owned copy of the ini the real PgBouncer was started with.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from bazbii_db.replication.__main__ import main
from bazbii_db.replication.errors import IniPermissionError
from bazbii_db.replication.pgbouncer import read_database_entry, stage_database_host

pytestmark = pytest.mark.timeout(60)


@contextmanager
def as_user(name: str):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch the effective uid")
    entry = pwd.getpwnam(name)
    os.setegid(entry.pw_gid)
    os.seteuid(entry.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def root_owned_ini(shared_topo) -> Path:
    base = Path(tempfile.mkdtemp(prefix="bazbii-ini-perm-"))
    try:
        base.chmod(0o755)  # traversable by the service user (pytest's tmp_path is root-only)
        directory = base / "pgbouncer"
        directory.mkdir(mode=0o755)
        ini = directory / "pgbouncer.ini"
        shutil.copyfile(shared_topo.bouncer.ini_path, ini)
        ini.chmod(0o644)  # readable by everyone, writable by root only; the directory too
        yield ini
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_stage_names_the_file_and_the_permission_and_writes_nothing(root_owned_ini, shared_topo):
    before = root_owned_ini.read_text()
    with as_user("postgres"):
        entry = read_database_entry(root_owned_ini, shared_topo.alias)  # reading is allowed
        with pytest.raises(IniPermissionError) as caught:
            stage_database_host(root_owned_ini, shared_topo.alias, host="127.0.0.1", port=1)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{root_owned_ini}: permission denied")
    assert f"write permission on its directory {root_owned_ini.parent}" in message
    assert "The ini was not changed" in message
    assert root_owned_ini.read_text() == before and sorted(p.name for p in root_owned_ini.parent.iterdir()) == \
        ["pgbouncer.ini"]
    assert entry["host"] == "127.0.0.1"

    root_owned_ini.chmod(0o600)
    with as_user("postgres"), pytest.raises(IniPermissionError, match="needs read permission on it"):
        read_database_entry(root_owned_ini, shared_topo.alias)


def test_switchover_cli_exits_1_with_one_line_and_changes_nothing(root_owned_ini, shared_topo, monkeypatch,
                                                                 capsys):
    topo = shared_topo
    monkeypatch.setenv("BAZBII_OLD_PRIMARY_DSN", topo.primary.dsn(dbname="appdb"))
    monkeypatch.setenv("BAZBII_NEW_PRIMARY_DSN", topo.replica.dsn(dbname="appdb"))
    monkeypatch.setenv("BAZBII_PGBOUNCER_ADMIN_DSN", topo.bouncer.admin_dsn())
    before = root_owned_ini.read_text()
    with as_user("postgres"):
        code = main(["switchover", "--ini", str(root_owned_ini), "--alias", topo.alias, "--new-host", "127.0.0.1",
                     "--new-port", str(topo.replica.port)])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("switchover aborted, old primary serving at precheck")
    assert str(root_owned_ini) in lines[0] and "write permission" in lines[0]
    assert root_owned_ini.read_text() == before and len(list(root_owned_ini.parent.iterdir())) == 1
    assert topo.primary.password not in out + err
