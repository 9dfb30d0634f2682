"""The retired dynamic providers still unpickle from their old path, and deleting their resources does nothing.

An existing stack holds ``db-lag-gate-<server>`` and ``db-switchover`` as dynamic resources whose
``__provider`` input is the provider pickled by ``pulumi.dynamic`` (by reference). The first update
with the SSH data plane deletes them, which makes the engine unpickle those exact bytes. The
strings below were produced by ``pulumi.dynamic.dynamic.serialize_provider`` from the providers as
they were before the move (commit a6a6669).
"""

from __future__ import annotations

import base64

import dill
import pytest

from components.providers.replication import PlannedSwitchoverProvider, ReplicaLagGateProvider

OLD_STATE = {
    "ReplicaLagGateProvider":
        "gASVQgAAAAAAAACMIGNvbXBvbmVudHMucHJvdmlkZXJzLnJlcGxpY2F0aW9ulIwWUmVwbGljYUxhZ0dhdGVQcm92aWRlcpSTlCmBlC4=",
    "PlannedSwitchoverProvider":
        "gASVRQAAAAAAAACMIGNvbXBvbmVudHMucHJvdmlkZXJzLnJlcGxpY2F0aW9ulIwZUGxhbm5lZFN3aXRjaG92ZXJQcm92aWRlcpSTlCmBlC4=",
}


@pytest.mark.parametrize("name, cls", [("ReplicaLagGateProvider", ReplicaLagGateProvider),
                                       ("PlannedSwitchoverProvider", PlannedSwitchoverProvider)])
def test_old_pickles_load_and_delete_changes_nothing(name, cls):
    provider = dill.loads(base64.b64decode(OLD_STATE[name]))  # what `python -m pulumi.dynamic` does
    assert type(provider) is cls
    assert provider.delete("id", {"slot": "server3", "new_host": "10.0.0.3"}) is None
    assert provider.diff("id", {}, {}).changes is False
    with pytest.raises(NotImplementedError, match="remote.Command"):
        provider.create({})
