"""Pure functions: LSN arithmetic, DSN redaction, ini parsing/rewrite, script generation."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from . import repl_helpers  # noqa: F401
from bazbii_db.replication import format_lsn, lsn_diff, parse_lsn, redact_dsn
from bazbii_db.replication.pgbouncer import (PgBouncerError, parse_connstr, read_database_entry,
                                             rewrite_database_host)
from bazbii_db.replication.replica import replica_setup_script
from bazbii_db.replication.retire import retire_primary_script

pytestmark = pytest.mark.timeout(30)


def test_lsn_roundtrip_and_numeric_order():
    assert parse_lsn("0/A0") < parse_lsn("0/1000")  # text order would say the opposite
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert lsn_diff(parse_lsn("0/2000"), parse_lsn("0/1000")) == 0x1000
    assert lsn_diff(parse_lsn("0/1000"), parse_lsn("0/2000")) == 0
    assert parse_lsn(None) is None
    with pytest.raises(ValueError):
        parse_lsn("nonsense")


def test_redact_dsn_hides_password():
    text = redact_dsn("host=db port=5432 user=app password=s3cret dbname=x")
    assert "s3cret" not in text and "password=***" in text and "host=db" in text


INI = """;; managed by bazbii
[databases]
app = host=10.0.0.2 port=5432 dbname=appdb pool_size=30
app_ro = host=10.0.0.2 port=5432 dbname=appdb
other = host='db.example' port=6432 dbname=x

[pgbouncer]
listen_port = 6432
"""


def test_ini_rewrite_changes_only_the_alias_and_is_atomic(tmp_path):
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text(INI)
    ini.chmod(0o640)
    inode = ini.stat().st_ino
    change = rewrite_database_host(ini, "app", host="10.0.0.3", port=5433)
    text = ini.read_text()
    assert "app = host=10.0.0.3 port=5433 dbname=appdb pool_size=30\n" in text
    assert "app_ro = host=10.0.0.2 port=5432 dbname=appdb\n" in text  # untouched
    assert text.replace("host=10.0.0.3 port=5433", "host=10.0.0.2 port=5432", 1) == INI
    assert stat.S_IMODE(ini.stat().st_mode) == 0o640
    assert ini.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert change.old_value.startswith("host=10.0.0.2")
    assert read_database_entry(ini, "app")["port"] == "5433"
    assert read_database_entry(ini, "other")["host"] == "db.example"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_ini_rewrite_unknown_alias_fails_clearly(tmp_path):
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text(INI)
    with pytest.raises(PgBouncerError, match="no \\[databases\\] entry 'nope'"):
        rewrite_database_host(ini, "nope", host="h", port=1)
    assert ini.read_text() == INI
    with pytest.raises(ValueError):
        rewrite_database_host(ini, "app", host="evil host; rm", port=1)


def test_parse_connstr_quotes():
    assert parse_connstr("host='a b' port=1") == [("host", "'a b'"), ("port", "1")]


def test_replica_script_never_contains_the_password_and_is_valid_bash(tmp_path):
    script = replica_setup_script(primary_host="10.0.0.2", primary_port=5432, replication_user="replicator",
                                  slot="server3", datadir="/var/lib/postgresql/15/main",
                                  passfile="/var/lib/postgresql/.pgpass_replication",
                                  start_command="systemctl start postgresql@15-main")
    assert "pg_basebackup" in script and " -R -C -S " in script and "umask 077" in script
    assert "BAZBII_REPLICATION_PASSWORD" in script and "PGPASSWORD" not in script
    path = tmp_path / "s.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    with pytest.raises(ValueError):
        replica_setup_script(primary_host="h", replication_user="r", slot="Bad-Slot", datadir="/d", passfile="/p")


def test_retire_script_is_valid_bash(tmp_path):
    script = retire_primary_script()
    assert "systemctl stop postgresql@15-main" in script and "disable" in script and "start.conf" in script
    path = tmp_path / "r.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    with pytest.raises(ValueError):
        retire_primary_script(systemd_unit=None, datadir=None)
