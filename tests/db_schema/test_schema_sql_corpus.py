"""The corpus of statements from public catalogues and PostgreSQL's documentation: every verdict, in every
stage, with a shadow run on a real PostgreSQL 15; without one the static rules still never miss."""

from __future__ import annotations

import psycopg
import pytest

from bazbii_db.sql_safety import ERROR, STAGES
from bazbii_db.sql_safety.catalog import PgCatalog
from bazbii_db.sql_safety.findings import CATALOG_DEPENDENT_RULES
from bazbii_db.sql_safety.shadow import SHADOW_JUDGES, ShadowServer

from .sql_corpus import CATALOG, DOCS, END, OFFLINE, SHADOW, START, all_verdicts, figures, load_corpus, our_findings, \
    render

pytestmark = [pytest.mark.timeout(600)]
SCHEMA, CASES = load_corpus()
# The classes of issue 26 (what a rule catalogue over a parse tree cannot see), each with unsafe statements
# and their safe counterparts in the corpus.
ISSUE_26_CLASSES = {
    "do-lock-held", "do-concurrently", "do-enum-value", "insert", "data-change-in-cte", "data-change-in-function",
    "setval", "session-replication-role", "alter-sequence", "view-replace", "trigger-rejects-old-writes",
    "drop-cascade", "drop-breaks-dependents", "disable-trigger-all", "quoted-identifiers", "search-path",
    "schema-qualified", "domain-check-rewrite", "array-element-type", "not-null-after-default",
    "proving-check-dropped", "partitioned-index", "refresh-concurrently-unique-index", "using-index",
    "attach-partition", "partition-of", "create-policy", "conjunctive-check", "timestamp-precision",
    "domain-to-base", "vacuum-full-false", "set-unlogged-noop",
}


def test_the_corpus_is_large_enough_and_cites_its_sources():
    assert len(CASES) >= 200
    assert len({c.id for c in CASES}) == len(CASES)
    catalogues = {c.source.split()[0].rstrip(":") for c in CASES}
    assert catalogues == {"squawk", "strong_migrations", "pg_ha_migrations", "GitLab", "PostgreSQL"}
    kinds = {v for c in CASES for v in c.expected.values()}
    assert kinds == {"deny", "allow"}


def test_every_class_of_issue_26_has_unsafe_statements_and_safe_counterparts():
    assert {c.klass for c in CASES if c.klass} == ISSUE_26_CLASSES
    for klass in ISSUE_26_CLASSES:
        members = [c for c in CASES if c.klass == klass]
        # a counterpart pair: a statement denied in a stage where another of the class is allowed
        pairs = [(unsafe.id, safe.id, stage) for unsafe in members for safe in members for stage in STAGES
                 if unsafe.expected[stage] == "deny" and safe.expected[stage] == "allow"]
        assert pairs, (klass, [c.id for c in members])


@pytest.fixture(scope="module")
def corpus(pg_cluster):
    """Every analyser's verdicts, computed once: the corpus schema in its own database (the catalog), and the
    cluster as the shadow server (one scratch database per case)."""
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS sql_corpus WITH (FORCE)")
        conn.execute("CREATE DATABASE sql_corpus")
    with psycopg.connect(pg_cluster.dsn(dbname="sql_corpus"), autocommit=True) as conn:
        conn.execute(SCHEMA)
        catalog = PgCatalog(conn)
        yield catalog, all_verdicts(SCHEMA, CASES, catalog, ShadowServer(pg_cluster.dsn()))


def _wrong(verdicts: dict) -> list[str]:
    return [f"{case.id} [{case.source}] {stage}: expected {case.expected[stage]}, got {verdicts[case.id][stage]}"
            for case in CASES for stage in STAGES if verdicts[case.id][stage] != case.expected[stage]]


def test_with_a_shadow_run_every_verdict_holds(corpus):
    """Every class denied, every safe counterpart allowed, in every stage."""
    _, verdicts = corpus
    wrong = _wrong(verdicts[SHADOW])
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("analyser", [CATALOG, OFFLINE])
def test_without_a_shadow_run_the_static_rules_still_fail_closed(corpus, analyser):
    _, verdicts = corpus
    missed = [w for w in _wrong(verdicts[analyser]) if "expected deny" in w]
    assert not missed, "\n".join(missed)


def test_offline_refusals_of_safe_statements_say_a_shadow_run_or_a_catalog_would_judge(corpus):
    catalog, verdicts = corpus
    for case in CASES:
        offline = our_findings(case, SCHEMA, None)
        for stage in STAGES:
            if case.expected[stage] != "allow" or verdicts[OFFLINE][case.id][stage] == "allow":
                continue
            for finding in (f for f in offline[stage] if f.severity == ERROR):
                assert finding.rule in SHADOW_JUDGES | CATALOG_DEPENDENT_RULES, (case.id, stage, finding)
                if finding.rule in SHADOW_JUDGES:
                    assert "shadow run" in finding.message + finding.fix, finding


def test_docs_hold_the_figures_of_this_run(corpus):
    _, verdicts = corpus
    table = render(figures(CASES, verdicts), CASES)
    docs = DOCS.read_text()
    assert docs[docs.index(START):docs.index(END) + len(END)] == table, \
        "docs/schema-migrations.md is stale: run venv/bin/python -m tests.db_schema.sql_corpus --write"
