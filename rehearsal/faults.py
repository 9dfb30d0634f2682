"""Injected faults: ``--inject FAULT@STEP``.

``gateway-5xx``    server2's gateway answers 500 to a share of API requests (not to the
                   health check, so the load balancer's monitor keeps the pool up): only the
                   error-rate gate can catch it. Valid at a step that sends traffic to server2.
``replica-lag``    WAL replay is paused on the replica and WAL is written on the primary right
                   before the switchover: the lag gate must refuse it. Valid at the step that
                   moves the primary.
``canary-errors``  the 2.0 canary answers 500 to a share of requests. Valid at a step with a
                   canary.

A fault is armed when its step is applied and cleared (the operator's fix) once the step was
rolled back; the walk then retries the step without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from bazbii_plan.models import StackState

FAULTS = ("gateway-5xx", "replica-lag", "canary-errors")
ERROR_RATE = 0.2
# replica-lag, in both rehearsals: replay paused on the switchover's target, then about 4 MB of WAL written
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


@dataclass
class Faults:
    planned: dict[str, str] = field(default_factory=dict)   # step -> fault
    armed: str | None = None
    armed_at: str | None = None
    canary_error_rate: float = ERROR_RATE

    def arm(self, step: str, services) -> str | None:
        fault = self.planned.get(step)
        if fault is None:
            return None
        self.armed, self.armed_at = fault, step
        if fault == "gateway-5xx":
            services.nginx_faults["server2"] = ERROR_RATE
            if "server2" in services.nginx:
                services.reload_gateway("server2")
        return fault

    def canary_faulty(self) -> bool:
        return self.armed == "canary-errors"

    def before_switchover(self, services, source: str, target: str, ctx) -> None:
        if self.armed != "replica-lag":
            return
        with psycopg.connect(services.pg[target].dsn(), autocommit=True) as conn:
            conn.execute(PAUSE_REPLAY_SQL)
        with psycopg.connect(services.pg[source].dsn(), autocommit=True) as conn:
            conn.execute(LAG_FILLER_SQL)
        ctx.act(f"fault: replica-lag injected (WAL replay paused on {target}, ~4 MB of WAL written on {source})")

    def clear(self, services) -> str | None:
        """The operator's fix after the rollback."""
        fault, self.armed = self.armed, None
        if fault == "gateway-5xx":
            services.nginx_faults.pop("server2", None)
            if "server2" in services.nginx:
                services.reload_gateway("server2")
        elif fault == "replica-lag":
            for pg in services.pg.values():
                with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                    if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        conn.execute(RESUME_REPLAY_SQL)
        if fault:
            self.planned.pop(self.armed_at, None)
        return fault
