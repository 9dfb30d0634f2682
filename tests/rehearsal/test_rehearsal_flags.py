"""The flags track on real servers (PostgreSQL 15, PgBouncer, the API under uvicorn, the workers,
nginx on the gateway's loopback address): the plan's flag steps go through the rehearsal's
reconcilers while requests keep coming, the API processes and the workers roll onto the new
``BAZBII_FLAGS`` document, and the cohort (``bazbii_plan.flags.in_cohort``) takes the new path.

One walk (module fixture, about half a minute here): from new-category-ui-0 to -10, writes at
10 %, then to -50, writes at 50 %. The tests below reads what the walk recorded.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from bazbii_db.migrations import MigrationRunner
from bazbii_plan.facts import MIGRATION_STAGES
from bazbii_plan.flags import ENV_VAR, flags_document, in_cohort
from rehearsal.bootstrap import SEED_POSTS, bootstrap_database
from rehearsal.faults import Faults
from rehearsal.load import CATEGORIES, USERS
from rehearsal.procs import ProcessRegistry
from rehearsal.reconcilers import Context, build_reconcilers, gateway_servers, reconcile
from rehearsal.runner import Options, prepare
from rehearsal.services import ADDRESSES, Services
from testsupport.localcluster import make_workdir

FLAG = "new_category_ui"
STEPS = ("new-category-ui-10", "new-category-ui-50")
ENOUGH = 12            # writes on each side of the cohort, under each rollout, before moving on
WRITES_TIMEOUT_S = 40  # bounded even on a busy machine


class Traffic:
    """Writes and reads through the gateway from a thread, each as a random user; every answer recorded.

    No keep-alive to the gateway (the rehearsal's load balancer uses http-server-close too): a
    gateway reload closes idle connections, and a POST sent on one at that instant is lost.
    """

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.results: list[tuple[float, str, int, str]] = []   # (sent at, kind, status, error)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        rng = random.Random(15)
        with httpx.Client(base_url=self.base_url, timeout=10,
                          limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for i in range(10**9):
                if self._stop.is_set():
                    return
                user = rng.randint(1, USERS)
                headers = {"X-User-Id": str(user)}
                kind = "write" if i % 2 == 0 else "read"
                sent = time.time()
                try:
                    if kind == "write":
                        r = client.post("/posts", headers=headers, json={
                            "title": "flags", "user_id": user, "category": rng.choice(CATEGORIES)})
                    else:
                        r = client.get(f"/posts/{rng.randint(1, SEED_POSTS)}", headers=headers)
                    self.results.append((sent, kind, r.status_code, ""))
                except httpx.HTTPError as exc:
                    self.results.append((sent, kind, 0, f"{type(exc).__name__}: {exc}"))
                time.sleep(0.01)


@dataclass
class FlagWalk:
    states: dict
    services: Services
    notes: list[str]
    rolls: dict[str, tuple[float, float]] = field(default_factory=dict)     # step -> (started, ended)
    posts: dict[str, list[tuple[int, str | None]]] = field(default_factory=dict)  # step -> (user, category)
    api_instances: dict[str, set[str]] = field(default_factory=dict)        # step -> instances after it
    results: list = field(default_factory=list)
    metrics: str = ""


def posts_after(dsn: str, after_id: int) -> list[tuple[int, str | None]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT user_id, category FROM posts WHERE id > %s AND title = 'flags' ORDER BY id",
                            (after_id,)).fetchall()


def last_post_id(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT max(id) FROM posts").fetchone()[0]


def wait_for_both_sides(dsn: str, after_id: int, rollout: int) -> list[tuple[int, str | None]]:
    deadline = time.monotonic() + WRITES_TIMEOUT_S
    while True:
        rows = posts_after(dsn, after_id)
        inside = sum(in_cohort(u, rollout) for u, _ in rows)
        if min(inside, len(rows) - inside) >= ENOUGH or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


@pytest.fixture(scope="module")
def walk():
    states = prepare(Options()).step_states
    start = states[STEPS[0]][0]
    assert start.flags[FLAG].rollout == 0 and start.app.api.image.endswith(":2.0.0")
    run_dir = make_workdir("bazbii-rehearsal-flags-")
    registry = ProcessRegistry(run_dir)
    try:
        services = Services(run_dir, registry, ttl_scale=120)
        primary = start.database.primary
        services.start_primary(primary)
        bootstrap_database(services.pg[primary])
        dsn = services.pg[primary].dsn()
        migration = start.schema_.migration
        for stage in MIGRATION_STAGES[:MIGRATION_STAGES.index(migration.stage) + 1]:
            MigrationRunner(dsn).apply(migration.id, stage, ["2.0.0"])
        services.start_pgbouncer(primary)
        notes: list[str] = []
        ctx = Context(services, Faults(), notes.append, soak_seconds=1, gate_timeout=10)
        reconcilers = build_reconcilers()
        reconcilers["app"].start(start, ctx)
        (gateway,) = gateway_servers(start)
        services.start_gateway(gateway)
        out = FlagWalk(states, services, notes)
        with Traffic(f"http://{ADDRESSES[gateway]}:{services.ports['nginx']}") as traffic:
            time.sleep(1.0)
            for step in STEPS:
                old, new = states[step]
                started = time.time()
                reconcile(reconcilers, old, new, ctx)
                out.rolls[step] = (started, time.time())
                out.api_instances[step] = set(services.apis)
                # Every old process is stopped: each later write was served under the new flags.
                out.posts[step] = wait_for_both_sides(dsn, last_post_id(dsn), new.flags[FLAG].rollout)
            (_, _, port), = services.apis.values()
            out.metrics = httpx.get(f"http://{ADDRESSES['server1']}:{port}/metrics", timeout=5).text
        out.results = list(traffic.results)
        yield out
    finally:
        registry.stop_all()
        shutil.rmtree(run_dir, ignore_errors=True)


def picked(category: str | None) -> bool:
    """The new path stores the picker's category; the old path NULL (a 2.0 worker's catch-up may then
    give it the column's default, never a picked category)."""
    return category in CATEGORIES


def test_at_rollout_10_only_the_cohort_gets_a_category(walk):
    rows = walk.posts[STEPS[0]]
    inside = [(u, c) for u, c in rows if in_cohort(u, 10)]
    outside = [(u, c) for u, c in rows if not in_cohort(u, 10)]
    assert len(inside) >= ENOUGH and len(outside) >= ENOUGH, (len(inside), len(outside))
    assert all(picked(c) for _, c in inside), inside
    assert not any(picked(c) for _, c in outside), [r for r in outside if picked(r[1])]
    assert {c for _, c in outside} <= {None, "general"}


def test_a_higher_rollout_grows_the_cohort(walk):
    rows = walk.posts[STEPS[1]]
    assert all(picked(c) == in_cohort(u, 50) for u, c in rows), [(u, c) for u, c in rows if picked(c) != in_cohort(u, 50)]
    newly_in = [(u, c) for u, c in rows if in_cohort(u, 50) and not in_cohort(u, 10)]
    assert newly_in and all(picked(c) for _, c in newly_in)
    assert any(not in_cohort(u, 50) for u, _ in rows)


def test_flag_steps_roll_api_and_workers_without_a_failed_request(walk):
    failed = [r for r in walk.results if r[2] not in (200, 201)]
    assert not failed, failed[:5]
    for step, (started, ended) in walk.rolls.items():
        during = [r for r in walk.results if started <= r[0] <= ended]
        assert len(during) >= 10, (step, len(during))   # the roll happened under traffic
    # each step replaced the API process (new instance, the old one stopped) ...
    first, second = (walk.api_instances[s] for s in STEPS)
    assert len(first) == len(second) == 1 and first != second
    assert sum("stopped after draining" in n for n in walk.notes) == len(STEPS)
    # ... and what runs now reads the last step's document, API and workers alike
    document = flags_document(walk.states[STEPS[-1]][1].flags)
    pids = [m.popen.pid for m, _, _ in walk.services.apis.values()] + [m.popen.pid for m, _ in walk.services.workers]
    assert len(walk.services.workers) >= 1
    assert {process_env(pid)[ENV_VAR] for pid in pids} == {document}
    assert sum("workers rolled one at a time" in n for n in walk.notes) == len(STEPS)
    # the request metrics carry the cohort, so a gate can be scoped to it
    assert f'flag_{FLAG}="on"' in walk.metrics and f'flag_{FLAG}="off"' in walk.metrics
