"""Privileges a non-superuser operations role needs for the gate, the check and the switchover.

PostgreSQL 15 can grant each of these narrowly (``GRANT ALTER SYSTEM ON PARAMETER`` is new in 15),
so the role that runs them (the component uses the replication user) does not have to be a
superuser. Apply on the primary; catalogs replicate, so the replica has them too. Role
memberships and ``ALTER SYSTEM ON PARAMETER`` are cluster-wide, but ``EXECUTE ON FUNCTION``
grants live in each database: apply them while connected to the database the operational
connections use (the switchover pre-check names anything missing).
"""

from __future__ import annotations

from psycopg import sql

from ._conn import connect

# (statement template, what needs it)
_OPS_GRANTS: tuple[tuple[str, str], ...] = (
    ("GRANT pg_monitor TO {role}", "lag gate: LSN columns of pg_stat_replication, pg_stat_wal_receiver; "
                                   "switchover: every session's transaction age in pg_stat_activity"),
    ("GRANT pg_read_all_data TO {role}", "consistency check: read every table"),
    ("GRANT ALTER SYSTEM ON PARAMETER default_transaction_read_only TO {role}", "switchover: fence / un-fence"),
    ("GRANT EXECUTE ON FUNCTION pg_reload_conf() TO {role}", "switchover: apply the fence"),
    ("GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO {role}", "switchover: promote the replica"),
    ("GRANT pg_signal_backend TO {role}", "switchover: end sessions left on the fenced old primary"),
)

_REWIND_GRANTS: tuple[tuple[str, str], ...] = (
    ("GRANT pg_checkpoint TO {role}", "re-attach: CHECKPOINT on the new primary before pg_rewind"),
    ("GRANT EXECUTE ON FUNCTION pg_ls_dir(text, boolean, boolean) TO {role}", "pg_rewind source access"),
    ("GRANT EXECUTE ON FUNCTION pg_stat_file(text, boolean) TO {role}", "pg_rewind source access"),
    ("GRANT EXECUTE ON FUNCTION pg_read_binary_file(text) TO {role}", "pg_rewind source access"),
    ("GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO {role}",
     "pg_rewind source access"),
)


def ops_grants_sql(role: str, *, include_rewind: bool = False) -> list[sql.Composed]:
    """The GRANT statements for ``role`` (identifier-quoted), in a stable order."""
    grants = _OPS_GRANTS + (_REWIND_GRANTS if include_rewind else ())
    return [sql.SQL(template).format(role=sql.Identifier(role)) for template, _ in grants]


def apply_ops_grants(superuser_dsn: str, role: str, *, include_rewind: bool = False) -> int:
    """Run :func:`ops_grants_sql` on the primary as a superuser; returns the number of statements."""
    statements = ops_grants_sql(role, include_rewind=include_rewind)
    with connect(superuser_dsn, application_name="bazbii-grants") as conn:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
    return len(statements)


def explain_grants(include_rewind: bool = False) -> list[tuple[str, str]]:
    grants = _OPS_GRANTS + (_REWIND_GRANTS if include_rewind else ())
    return [(template.format(role="<role>"), why) for template, why in grants]


__all__ = ["ops_grants_sql", "apply_ops_grants", "explain_grants"]
