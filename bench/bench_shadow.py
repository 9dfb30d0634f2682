"""Benchmark: what a shadow run costs, stage by stage, for the migrations in ``migrations/``.

Not a test (``tests/db_schema/test_schema_shadow.py`` holds the 3 s budget). Starts a throwaway
PostgreSQL 15 cluster configured like production's (``fsync`` and ``synchronous_commit`` on, so
``CREATE DATABASE`` pays for its WAL) and judges every stage of every migration with
:func:`bazbii_db.migrations.lint.lint_migration` and a shadow server, ``--rounds`` times; prints
the median wall time per stage (static rules, scratch database, base replay, the stage and its
down step, drop), the statements observed, and the static rules alone for comparison. The last
row judges 0002's contract from a schema-only dump of a target database (``pg_dump`` and ``psql``)
where everything before it is applied, as ``apply --shadow-from-target`` does.

    venv/bin/python -m bench.bench_shadow [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg

from bazbii_db.migrations import MigrationRunner
from bazbii_db.migrations.lint import lint_migration
from bazbii_db.migrations.spec import default_migrations_dir, list_migrations, load_migration
from bazbii_db.sql_safety import STAGES
from bazbii_db.sql_safety.shadow import ShadowServer, TargetSchema
from testsupport.localcluster import LocalCluster, make_workdir, remove_workdir


def _timed(fn) -> tuple[float, object]:
    started = time.monotonic()
    out = fn()
    return time.monotonic() - started, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_shadow", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    workdir = make_workdir("bazbii-bench-shadow-")
    cluster = LocalCluster.init(workdir, "shadow", fsync="on", synchronous_commit="on")
    try:
        cluster.start()
        server = ShadowServer(cluster.dsn())
        root = default_migrations_dir()
        print("| migration / stage | statements observed | shadow run (median) | slowest | static rules alone |")
        print("|---|---|---|---|---|")
        for mig in list_migrations(root):
            migration = load_migration(root / mig)
            for stage in STAGES:
                if not migration.has_content(stage) and migration.down_file(stage) is None:
                    continue
                runs = [_timed(lambda: lint_migration(root / mig, shadow=server, stages=(stage,)))
                        for _ in range(args.rounds)]
                static = [_timed(lambda: lint_migration(root / mig, stages=(stage,)))[0] for _ in range(args.rounds)]
                lint = runs[-1][1]
                if not lint.run.ok:
                    print(f"| {mig} / {stage} | shadow run failed: {lint.run.reason} | | | |")
                    continue
                observed = sum(1 for step, obs in lint.run.observed if step.stage and not obs.skipped)
                times = [t for t, _ in runs]
                print(f"| {mig} / {stage} | {observed} | {statistics.median(times):.2f} s | {max(times):.2f} s | "
                      f"{statistics.median(static):.2f} s |")
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE target")
        target = cluster.dsn(dbname="target")
        runner = MigrationRunner(target, root)
        runner.apply("0001_init", "expand")
        for stage in ("expand", "migrate"):
            runner.apply("0002_add_category", stage)
        runs = [_timed(lambda: lint_migration(root / "0002_add_category", shadow=server, stages=("contract",),
                                              target=TargetSchema(target))) for _ in range(args.rounds)]
        times, lint = [t for t, _ in runs], runs[-1][1]
        observed = sum(1 for step, obs in lint.run.observed if step.stage and not obs.skipped) if lint.run.ok else 0
        print(f"| 0002_add_category / contract, from a schema-only dump of the target | {observed} | "
              f"{statistics.median(times):.2f} s | {max(times):.2f} s | |")
    finally:
        cluster.stop(mode="immediate")
        remove_workdir(workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
