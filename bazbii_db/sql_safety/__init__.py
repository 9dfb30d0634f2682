"""Safety analysis of migration SQL statements, shared by the migration runner and the policy pack.

One module per concern:

* :mod:`.parsing`: pglast parsing (the real PostgreSQL grammar) and parse-tree helpers; SQL that
  does not parse is an error, never a pass (fail closed);
* :mod:`.facts`: what is known about the schema, carried across statements, stages and
  migrations (validated NOT NULL checks, checks added NOT VALID, column types), and the
  optional :class:`~.facts.Catalog` (a live database, :mod:`.catalog`);
* :mod:`.locks`: statements whose locks block readers or writers, and table rewrites;
* :mod:`.constraints`: NOT VALID / VALIDATE / SET NOT NULL, domain constraints;
* :mod:`.types`: ADD COLUMN (volatile defaults, serial/identity) and rewrite-free type changes;
* :mod:`.renames`: renames and drops (contract only);
* :mod:`.timeouts`: ``lock_timeout`` / ``statement_timeout`` set by a file;
* :mod:`.doblocks`: the statements inside DO blocks, and the block as one transaction;
* :mod:`.datachanges`: data changes on real data (INSERT ... SELECT, CTEs, functions, sequences);
* :mod:`.dependents`: what a drop takes with it, views the old application reads;
* :mod:`.triggers`: triggers the old application's writes go through;
* :mod:`.engine`: the dispatch (unknown statement kinds are refused) and :func:`analyse_sql`;
* :mod:`.squawk`: squawk's wider catalogue, as warnings;
* :mod:`.shadow`: the shadow run, each stage on a scratch database where PostgreSQL says what it
  locks, rewrites, scans and drops; its observations replace the static rules it can judge.

The migration-directory lint (which reads ``migrations/NNNN_name/<stage>.sql``) is
:mod:`bazbii_db.migrations.lint`; this package knows nothing about migration directories.
"""

from .engine import analyse_sql, check_statement, validated_checks_after
from .facts import Catalog, OfflineCatalog, SchemaFacts, TypeSpec
from .findings import ERROR, STAGES, WARNING, Finding, SqlSafetyError, format_findings, has_errors
from .parsing import Statement, split_statements, walk
from .squawk import squawk_binary

__all__ = [
    "Catalog", "ERROR", "Finding", "OfflineCatalog", "STAGES", "SchemaFacts", "SqlSafetyError", "Statement",
    "TypeSpec", "WARNING", "analyse_sql", "check_statement", "format_findings", "has_errors", "split_statements",
    "squawk_binary", "validated_checks_after", "walk",
]
