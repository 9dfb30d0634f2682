"""The SQL safety corpus (``sql_corpus.yaml``): verdicts, and precision/recall against squawk alone.

    venv/bin/python -m tests.db_schema.sql_corpus            # print the figures table
    venv/bin/python -m tests.db_schema.sql_corpus --write    # and write it into docs/schema-migrations.md

Both start a throwaway PostgreSQL 15 (testsupport.localcluster) holding the corpus schema, so the
analysis can ask the catalog (function volatility, column types) as the runner can, and serves as
the shadow server: each case also runs on its own scratch copy of the schema (one shadow run per
case, judged for each stage). A test (test_schema_sql_corpus.py) checks that the docs table is
exactly what this computes.

Counting: each (statement, stage) pair is one case; "deny" is the positive class. squawk is not
stage-aware, so its verdict is the same in every stage: a statement is denied when squawk reports
any finding. Its row "without per-file rules" leaves out require-lock-timeout,
require-statement-timeout and prefer-robust-stmts, which fire on almost every file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import yaml

from bazbii_db.sql_safety import STAGES, Catalog, analyse_sql, has_errors, validated_checks_after
from bazbii_db.sql_safety.catalog import PgCatalog
from bazbii_db.sql_safety.shadow import ShadowRun, ShadowServer, SqlFile, Step, combine, shadow_run
from bazbii_db.sql_safety.squawk import squawk_json
from testsupport.localcluster import LocalCluster, make_workdir, remove_workdir

CORPUS = Path(__file__).with_name("sql_corpus.yaml")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "schema-migrations.md"
START, END = "<!-- sql-corpus-figures:start -->", "<!-- sql-corpus-figures:end -->"
PER_FILE_RULES = ("require-lock-timeout", "require-statement-timeout", "prefer-robust-stmts")
SHORTHANDS = {
    "deny": {"expand": "deny", "migrate": "deny", "contract": "deny"},
    "allow": {"expand": "allow", "migrate": "allow", "contract": "allow"},
    "contract": {"expand": "deny", "migrate": "deny", "contract": "allow"},
}


@dataclass(frozen=True)
class Case:
    id: str
    source: str
    sql: str
    expected: dict[str, str]  # stage -> "deny" | "allow"
    klass: str = ""  # the class of issue 26 it belongs to, if any


def load_corpus(path: Path = CORPUS) -> tuple[str, list[Case]]:
    data = yaml.safe_load(path.read_text())
    cases = []
    for item in data["statements"]:
        verdict = item["verdict"]
        expected = SHORTHANDS[verdict] if isinstance(verdict, str) else dict(verdict)
        if set(expected) != set(STAGES) or not set(expected.values()) <= {"deny", "allow"}:
            raise ValueError(f"corpus entry {item['id']}: verdict must be deny/allow/contract or one per stage")
        cases.append(Case(item["id"], item["source"], item["sql"], expected, item.get("class", "")))
    return data["schema"], cases


def shadow_of(case: Case, schema: str, server: ShadowServer) -> ShadowRun:
    """The case run once on a scratch copy of the schema (judged per stage by :func:`our_findings`)."""
    run = shadow_run(server, [SqlFile("corpus/schema.sql", schema)],
                     [Step(STAGES[0], (SqlFile(f"corpus/{case.id}.sql", case.sql),))])
    if not run.ok:
        raise RuntimeError(f"the shadow run of {case.id} could not run: {run.reason}")
    return run


def our_findings(case: Case, schema: str, catalog: Catalog | None, run: ShadowRun | None = None) -> dict[str, list]:
    facts = validated_checks_after(schema, catalog=catalog)
    out = {}
    for stage in STAGES:
        static = analyse_sql(case.sql, stage, f"corpus/{case.id}.sql", known_validated_checks=facts, catalog=catalog)
        judged = run and replace(run, observed=[(replace(step, stage=stage), obs) for step, obs in run.observed])
        out[stage] = combine(static, judged)
    return out


def our_verdicts(case: Case, schema: str, catalog: Catalog | None, run: ShadowRun | None = None) -> dict[str, str]:
    return {stage: "deny" if has_errors(findings) else "allow"
            for stage, findings in our_findings(case, schema, catalog, run).items()}


def squawk_verdict(case: Case, excluded: tuple[str, ...] = ()) -> str:
    items = squawk_json(case.sql, f"{case.id}.sql", excluded)
    if isinstance(items, str):
        raise RuntimeError(f"squawk could not judge {case.id}: {items}")
    return "deny" if items else "allow"


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, expected: str, got: str) -> None:
        if expected == "deny":
            self.tp += got == "deny"
            self.fn += got != "deny"
        else:
            self.fp += got == "deny"
            self.tn += got != "deny"

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


SHADOW, CATALOG, OFFLINE = ("bazbii analysis with a shadow run (static rules + PostgreSQL 15 on a scratch copy)",
                            "bazbii static rules, catalog connection (no shadow run)",
                            "bazbii static rules offline (no database: unknowns refused)")


def all_verdicts(schema: str, cases: list[Case], catalog: Catalog, server: ShadowServer) -> dict[str, dict[str, dict]]:
    """analyser -> case id -> stage -> verdict (squawk's is the same in every stage)."""
    out: dict[str, dict[str, dict]] = {SHADOW: {}, CATALOG: {}, OFFLINE: {}, "squawk 2.70 alone, default rules": {},
                                       "squawk 2.70 alone, without per-file rules": {}}
    for case in cases:
        out[SHADOW][case.id] = our_verdicts(case, schema, catalog, shadow_of(case, schema, server))
        out[CATALOG][case.id] = our_verdicts(case, schema, catalog)
        out[OFFLINE][case.id] = our_verdicts(case, schema, None)
        for name, excluded in (("squawk 2.70 alone, default rules", ()),
                               ("squawk 2.70 alone, without per-file rules", PER_FILE_RULES)):
            verdict = squawk_verdict(case, excluded)
            out[name][case.id] = {stage: verdict for stage in STAGES}
    return out


def figures(cases: list[Case], verdicts: dict[str, dict[str, dict]]) -> dict[str, Score]:
    rows = {name: Score() for name in verdicts}
    for name, by_case in verdicts.items():
        for case in cases:
            for stage in STAGES:
                rows[name].add(case.expected[stage], by_case[case.id][stage])
    return rows


def render(rows: dict[str, Score], cases: list[Case]) -> str:
    pairs = len(cases) * len(STAGES)
    unsafe = sum(v == "deny" for c in cases for v in c.expected.values())
    lines = [START, "",
             f"{len(cases)} statements x 3 stages = {pairs} cases ({unsafe} must be denied, {pairs - unsafe} allowed).",
             "", "| analyser | denied correctly | missed | refused though safe | precision | recall |",
             "|---|---|---|---|---|---|"]
    for name, s in rows.items():
        lines.append(f"| {name} | {s.tp} | {s.fn} | {s.fp} | {s.precision:.1%} | {s.recall:.1%} |")
    lines += ["", END]
    return "\n".join(lines)


def compute_with_cluster() -> str:
    schema, cases = load_corpus()
    workdir = make_workdir("bazbii-sql-corpus-")
    cluster = LocalCluster.init(workdir, "corpus")
    try:
        cluster.start()
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE corpus")
        with psycopg.connect(cluster.dsn(dbname="corpus"), autocommit=True) as conn:
            conn.execute(schema)
            verdicts = all_verdicts(schema, cases, PgCatalog(conn), ShadowServer(cluster.dsn()))
            return render(figures(cases, verdicts), cases)
    finally:
        cluster.stop(mode="immediate")
        remove_workdir(workdir)


def replace_table(text: str, table: str) -> str:
    start, end = text.index(START), text.index(END) + len(END)
    return text[:start] + table + text[end:]


if __name__ == "__main__":
    table = compute_with_cluster()
    print(table)
    if "--write" in sys.argv[1:]:
        DOCS.write_text(replace_table(DOCS.read_text(), table))
