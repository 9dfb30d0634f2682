"""Injected faults: ``--inject FAULT@STEP``.

``gateway-5xx``    server2's gateway answers 500 to a share of API requests (not to the
                   health check, so the load balancer's monitor keeps the pool up): only the
                   error-rate gate can catch it. Valid at a step that sends traffic to server2.
``replica-lag``    WAL replay is paused on the replica and WAL is written on the primary right
                   before the switchover: the lag gate must refuse it. Valid at the step that
                   moves the primary.
``canary-errors``  the 2.0 canary answers 500 to a share of requests. Valid at a step with a
                   canary.

How the walk arms, catches and clears each one is :mod:`rehearsal.engine_walk`'s: a fault that fails
requests is armed once its step is applied, replica-lag before its ``pulumi up``; after the rollback the
operator's fix clears it and the step is applied again.
"""

from __future__ import annotations

from bazbii_plan.models import StackState

FAULTS = ("gateway-5xx", "replica-lag", "canary-errors")
ERROR_RATE = 0.2
# replica-lag: replay paused on the switchover's target, then about 4 MB of WAL written
# on its source (over the lag gate's 1 MB), in the postgres database (WAL is the cluster's, the data is not
# the application's); the operator's fix resumes replay.
PAUSE_REPLAY_SQL = "SELECT pg_wal_replay_pause()"
RESUME_REPLAY_SQL = "SELECT pg_wal_replay_resume()"
LAG_FILLER_SQL = ("CREATE TABLE IF NOT EXISTS rehearsal_lag_filler (id int, pad text);"
                  " INSERT INTO rehearsal_lag_filler SELECT g, repeat('x', 1000) FROM generate_series(1, 4000) g")


class BadInjection(ValueError):
    pass


def fault_applies(fault: str, before: StackState, after: StackState) -> bool:
    """Whether ``fault`` can show at the step from ``before`` to ``after`` (it must change something)."""
    if fault == "gateway-5xx":
        pool = next((p for p in after.traffic.pools.values() if p.server == "server2"), None)
        old = next((p for p in before.traffic.pools.values() if p.server == "server2"), None)
        return pool is not None and pool.weight > 0 and (old is None or old.weight != pool.weight)
    if fault == "replica-lag":
        return before.database.primary != after.database.primary
    if fault == "canary-errors":
        return after.app.canary is not None and after.app.canary.weight > 0 and before.app.canary != after.app.canary
    return False


def parse_injections(values: list[str], steps: dict[str, tuple[StackState, StackState]]) -> dict[str, str]:
    """``["gateway-5xx@traffic-10"]`` -> {step: fault}; ``steps`` maps a step name to (before, after)."""
    out: dict[str, str] = {}
    for value in values:
        fault, sep, step = value.partition("@")
        if not sep or fault not in FAULTS:
            raise BadInjection(f"--inject {value!r}: expected FAULT@STEP with FAULT one of {', '.join(FAULTS)}")
        if step not in steps:
            raise BadInjection(f"--inject {value!r}: unknown step {step!r}; steps are {', '.join(steps)}")
        if not fault_applies(fault, *steps[step]):
            valid = [s for s, pair in steps.items() if fault_applies(fault, *pair)]
            raise BadInjection(f"--inject {value!r}: {fault} cannot show at {step}; valid steps: "
                               f"{', '.join(valid) or 'none in this walk'}")
        if step in out:
            raise BadInjection(f"--inject {value!r}: step {step!r} already has fault {out[step]!r}")
        out[step] = fault
    return out
