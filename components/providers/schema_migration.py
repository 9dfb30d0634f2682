"""Import shim for stacks created before the schema runner moved to the servers (issue 8).

``runner: provider`` ran :class:`bazbii_db.migrations.MigrationRunner` inside ``pulumi up``;
``runner: ssh`` now runs ``python -m bazbii_db.migrations apply`` on the pooler host over SSH
(``components/schema_release.py``). Existing ``SchemaMigrationStep`` resources are deleted with
the provider pickled from this path, so the class stays here with its old ``delete`` (a no-op:
removing the resource never un-applies a schema change).
"""

from __future__ import annotations

from components.providers.replication import _RetiredProvider


class SchemaMigrationProvider(_RetiredProvider):
    """Old ``schema-<id>-<stage>`` dynamic resources: deleting one leaves the schema as it is."""
