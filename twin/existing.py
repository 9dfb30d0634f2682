"""What production already has at the plan's first step (mvp), which the program takes over: the MVP.

The MVP runs today on two servers, configured by this program's own scripts when it was first set up,
with the application's data in its database. The twin builds that before the first ``pulumi up`` of the
``twin`` stack, so that update takes over a running MVP as production's first update under this program
would:

* PostgreSQL on the primary and PgBouncer on the pooler host, by the program's scripts
  (:mod:`components.postgres_scripts`) with the stack's own secrets;
* the baseline schema (migration 0001) applied by the project's migration runner, the job queue the
  workers consume and seed posts (:mod:`rehearsal.bootstrap`'s content), as the application's data.
"""

from __future__ import annotations

import shlex
import sys

from components.postgres_config import PGBOUNCER_ADMIN_USER, userlist
from components.postgres_scripts import as_root, pooler_script, primary_script
from rehearsal.bootstrap import JOBS, SEED

from .environment import Twin
from .lab import LabError
from .server import REPO_ROOT
from .stack import state_of

BASELINE = ("0001_init", "expand")


def _ok(result, what: str):
    if result.returncode != 0:
        raise LabError(f"{what}: {result.stdout[-1000:]}\n{result.stderr[-2000:]}")
    return result


def seed_mvp(twin: Twin, document: dict, secrets: dict) -> None:
    """Bring the twin's servers to the running MVP the stack ``document`` (at mvp) describes."""
    state = state_of(document)
    db, servers = state.database, state.servers
    app_pw, repl_pw = secrets["bazbii:dbPassword"], secrets["bazbii:replicationPassword"]
    primary, pooler = twin.servers[db.primary], twin.servers[db.pooler.server]
    _ok(primary.ssh(as_root(primary_script(db, servers)), stdin=f"{app_pw}\n{repl_pw}\n", timeout=300),
        f"setting up the MVP's PostgreSQL on {db.primary}")
    _ok(pooler.ssh(as_root(pooler_script(db, servers[db.primary].address)), timeout=120,
                   stdin=userlist({db.user: app_pw, PGBOUNCER_ADMIN_USER: secrets["bazbii:poolerAdminPassword"]})),
        f"setting up the MVP's PgBouncer on {db.pooler.server}")
    # The application's data, as the application's user (it owns the database), from the pooler host: a
    # server pg_hba lets in. The DSN (with its password) goes on stdin, never on a command line.
    dsn = f"host={servers[db.primary].address} port={db.port} dbname={db.name} user={db.user} password={app_pw}"
    migration, stage = BASELINE
    python = shlex.quote(sys.executable)
    steps = (
        (f"applying {migration} {stage}", f"{python} -m bazbii_db.migrations --migrations-dir migrations apply "
                                          f"--dsn-env BAZBII_DSN --migration {migration} --stage {stage}"),
        ("the job queue and seed posts", f"{python} -c {shlex.quote(SEED_PROGRAM)} {shlex.quote(JOBS + SEED)}"),
    )
    for what, command in steps:
        script = (f"IFS= read -r BAZBII_DSN; export BAZBII_DSN; cd {shlex.quote(str(REPO_ROOT))}; "
                  f"PYTHONPATH=. exec {command}")
        _ok(pooler.exec(["bash", "-c", script], input=dsn + "\n", timeout=300), f"MVP data on {db.primary}: {what}")


SEED_PROGRAM = "import os, sys, psycopg; psycopg.connect(os.environ['BAZBII_DSN'], autocommit=True).execute(sys.argv[1])"
