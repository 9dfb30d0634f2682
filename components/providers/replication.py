"""Import shims for stacks created before the data plane moved to the servers (issue 8).

The lag gate and the planned switchover used to be ``pulumi.dynamic`` providers that connected
from the machine running ``pulumi up``. They are now ``remote.Command`` steps running the
project's CLI on the servers (``components/postgres_cluster.py``, ``bazbii_db/dataplane.py``).

An existing stack still holds ``db-lag-gate-<server>`` / ``db-switchover`` resources whose
provider was pickled (by reference) from this module. The engine deletes them on the first
update with the new program, and to do so it unpickles these classes from this exact path:
keep them here, with a ``delete`` that does what it always did (nothing: a gate is a check, a
switchover an event that happened). They never create anything again.
"""

from __future__ import annotations

from pulumi.dynamic import DiffResult, ResourceProvider

RETIRED = ("this dynamic provider was replaced by a remote.Command that runs "
           "`python -m bazbii_db.replication` on the servers; nothing was done")


class _RetiredProvider(ResourceProvider):
    def create(self, props: dict):
        raise NotImplementedError(RETIRED)

    def update(self, _id: str, _olds: dict, _news: dict):
        raise NotImplementedError(RETIRED)

    def diff(self, _id: str, _olds: dict, _news: dict) -> DiffResult:
        return DiffResult(changes=False, replaces=[], delete_before_replace=False)

    def delete(self, _id: str, _props: dict) -> None:
        return None


class ReplicaLagGateProvider(_RetiredProvider):
    """Old ``db-lag-gate-<server>`` resources: deleting one changes nothing on the servers."""


class PlannedSwitchoverProvider(_RetiredProvider):
    """Old ``db-switchover`` resources: the promotion stays; moving back is a new switchover."""
