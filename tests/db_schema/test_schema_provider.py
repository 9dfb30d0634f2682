"""The retired ``SchemaMigrationStep`` provider: old state still deletes, nothing is ever applied by it.

``runner: ssh`` (components/schema_release.py) replaced it: the runner CLI runs on the pooler host
over SSH (tested for real in tests/ssh/test_dataplane_ssh.py). An existing stack's
``schema-<id>-<stage>`` dynamic resource is deleted with the provider pickled from the old path;
the string below was produced by ``pulumi.dynamic.dynamic.serialize_provider`` before the move
(commit a6a6669).
"""

from __future__ import annotations

import base64

import dill
import pytest

from components.providers.schema_migration import SchemaMigrationProvider

OLD_STATE = ("gASVSAAAAAAAAACMJWNvbXBvbmVudHMucHJvdmlkZXJzLnNjaGVtYV9taWdyYXRpb26UjBdTY2hlbWFNaWdyYXRpb25Qcm92aWRlcpST"
             "lCmBlC4=")


def test_old_pickle_loads_and_delete_leaves_the_schema_alone():
    provider = dill.loads(base64.b64decode(OLD_STATE))
    assert type(provider) is SchemaMigrationProvider
    assert provider.delete("0002_add_category/expand", {"migrationId": "0002_add_category"}) is None
    with pytest.raises(NotImplementedError, match="remote.Command"):
        provider.update("id", {}, {"stage": "expand"})
