"""The corpus of statements from public catalogues: every verdict, in every stage, on a real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from bazbii_db.sql_safety import STAGES, squawk_binary
from bazbii_db.sql_safety.catalog import PgCatalog

from .sql_corpus import DOCS, END, START, figures, load_corpus, our_verdicts, render

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(squawk_binary() is None, reason="squawk-cli not installed")]
SCHEMA, CASES = load_corpus()


def test_the_corpus_is_large_enough_and_cites_its_sources():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)
    catalogues = {c.source.split()[0].rstrip(":") for c in CASES}
    assert catalogues == {"squawk", "strong_migrations", "pg_ha_migrations", "GitLab", "PostgreSQL"}
    kinds = {v for c in CASES for v in c.expected.values()}
    assert kinds == {"deny", "allow"}


@pytest.fixture
def catalog(db):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(SCHEMA)
        yield PgCatalog(conn)


def test_every_corpus_verdict_holds(catalog):
    wrong = []
    for case in CASES:
        got = our_verdicts(case, SCHEMA, catalog)
        for stage in STAGES:
            if got[stage] != case.expected[stage]:
                wrong.append(f"{case.id} [{case.source}] {stage}: expected {case.expected[stage]}, got {got[stage]}")
    assert not wrong, "\n".join(wrong)


def test_docs_hold_the_figures_of_this_run(catalog):
    table = render(figures(SCHEMA, CASES, catalog), CASES)
    docs = DOCS.read_text()
    assert docs[docs.index(START):docs.index(END) + len(END)] == table, \
        "docs/schema-migrations.md is stale: run venv/bin/python -m tests.db_schema.sql_corpus --write"
