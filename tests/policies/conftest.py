"""The policy tests judge migration SQL with the static rules alone, whatever the environment says.

The PR workflow's offline job sets ``$BAZBII_SHADOW_DSN`` (a PostgreSQL service) for its lint and
preview; the rules' expected findings here are the static ones. The shadow run's part in the schema
policies is tested against real PostgreSQL in ``tests/db_schema/test_schema_shadow.py``.
"""

import pytest

from bazbii_db.sql_safety.shadow import SHADOW_DSN_ENV


@pytest.fixture(autouse=True)
def _static_sql_analysis(monkeypatch):
    monkeypatch.delenv(SHADOW_DSN_ENV, raising=False)
