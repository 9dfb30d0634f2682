"""The traffic shift applied by ``pulumi up`` under load, each step let through by its own live gate.

A stack named ``rehearsal`` (the only one that may set ``bazbii:timeScale``) on the twin, with:

* the edge (:mod:`twin.edge`): HAProxy steering the load by the load balancer's weights that the program
  declared to the Cloudflare emulator, to the gateways behind their live tunnels;
* a Prometheus configured from the stack's own ``metricsScrapeConfigs`` and ``metricsTargets`` outputs,
  scraping the gateways' HAProxy exporters and the API pods found through Kubernetes discovery;
* ``bazbii:metrics.endpoint`` pointing at it, so the transition check measures each step's criteria with
  the production PromQL, and nothing is overridden.

Soaks and windows are divided by the time scale (a 24 h soak takes 48 s here). A gateway failing half of
its requests makes the next step's gate refuse, and the step goes through once the errors have left the
window.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bazbii_plan.facts import TRANSITION_CHECK
from bazbii_plan.stackconfig import REHEARSAL_STACK
from twin.existing import seed_mvp
from twin.observe import start_edge, start_prometheus
from twin.operator import TwinOperator
from twin.server import REPO_ROOT
from twin.stack import first_steps, load_prod, twin_stack_document

pytestmark = pytest.mark.engine

TIME_SCALE = 1800  # a day is 48 s
RATE = 50  # requests per second through the edge
POOL_REQUESTS = 'sum(increase(haproxy_backend_http_responses_total{{pool=~"(.+,)?{pool}(,.+)?"}}[15s]))'


@pytest.fixture(scope="module")
def rehearsal(twin_with_cloud, tmp_path_factory):
    twin = twin_with_cloud
    prometheus = start_prometheus(twin)
    prod = load_prod()
    document = twin_stack_document(prod, {name: s.address for name, s in twin.servers.items()},
                                   steps=first_steps(prod), metrics_endpoint=prometheus.url)
    document["config"]["bazbii:timeScale"] = TIME_SCALE
    operator = TwinOperator.create(twin, stack=REHEARSAL_STACK, document=document)
    seed_mvp(twin, operator.document, operator.secrets)
    state = {"operator": operator, "prometheus": prometheus, "load": None}
    yield state
    if state["load"] is not None:
        state["load"].terminate()
        state["load"].wait(30)
    prometheus.stop()
    operator.cleanup()


def up(rehearsal, **pointers: str):
    operator, prometheus = rehearsal["operator"], rehearsal["prometheus"]
    operator.set_steps(**pointers)
    judged = operator.judged("up")
    if not judged.denied:
        prometheus.follow(operator.outputs())
    return judged


def wait_for(rehearsal, predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s\n{diagnostics(rehearsal)}")
        time.sleep(1)


def diagnostics(rehearsal) -> str:
    """What a failure needs: the scrape targets' health, the load's last requests, the edge's last changes."""
    workdir = rehearsal["operator"].twin.workdir
    tails = {name: (workdir / name).read_text().splitlines()[-8:] if (workdir / name).exists() else []
             for name in ("load.csv", "load.log", "edge/edge.log", "prometheus/prometheus.log")}
    return "\n".join(["targets:", *rehearsal["prometheus"].targets(),
                      *(line for name, lines in tails.items() for line in (f"{name}:", *lines))])


def requests_to(rehearsal, pool: str) -> float:
    result = rehearsal["prometheus"].query(POOL_REQUESTS.format(pool=pool))
    return float(result[0]["value"][1]) if result else 0.0


def test_the_steps_before_the_shift_and_the_load_through_the_edge(rehearsal):
    for step in ("mvp", "server3-provisioned", "replica-streaming", "gateway-on-server2"):
        judged = up(rehearsal, phase=step)
        assert not judged.denied, judged.output[-3000:] + diagnostics(rehearsal)
    operator = rehearsal["operator"]
    edge = start_edge(operator.twin, TIME_SCALE)
    out = operator.twin.workdir / "load.csv"
    rehearsal["load"] = operator.twin.lab.popen("edge", [
        sys.executable, "-m", "rehearsal.load", "--lb", f"http://{edge.http}", "--resolver", edge.resolver,
        "--gateway-port", "8080", "--rate", str(RATE), "--out", str(out)], cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL, stderr=open(operator.twin.workdir / "load.log", "ab"))
    # The live gate of traffic-10 measures server1's pool: its gateway's exporter and the API pods.
    wait_for(rehearsal, lambda: requests_to(rehearsal, "server1") > 100, 120, "server1's gateway served the load")
    assert requests_to(rehearsal, "server2") == 0  # weight 0: the edge sends it nothing


def test_traffic_10_is_let_through_by_its_live_gate(rehearsal):
    judged = up(rehearsal, phase="traffic-10")
    assert not judged.denied, judged.output[-3000:] + diagnostics(rehearsal)
    wait_for(rehearsal, lambda: requests_to(rehearsal, "server2") > 0, 60, "the edge sent server2 its 10 %")


def test_traffic_50_waits_for_its_scaled_soak(rehearsal):
    early = up(rehearsal, phase="traffic-50")
    assert early.denied
    failures = early.check_failures(TRANSITION_CHECK)
    assert any("soak" in f for f in failures), failures
    rehearsal["operator"].set_steps(phase="traffic-10")
    time.sleep(24 * 3600 / TIME_SCALE + 2)
    judged = up(rehearsal, phase="traffic-50")
    assert not judged.denied, judged.output[-3000:] + diagnostics(rehearsal)


def test_a_gateway_failing_requests_stops_traffic_100_until_the_errors_leave_the_window(rehearsal):
    server2 = rehearsal["operator"].twin.servers["server2"]
    fault = server2.ssh("sudo -n docker twin-fault bazbii-gateway 0.5")
    assert fault.returncode == 0, fault
    try:
        time.sleep(3600 / TIME_SCALE + 15)  # the soak of traffic-100, errors filling the window
        refused = up(rehearsal, phase="traffic-100")
        assert refused.denied
        failures = refused.check_failures(TRANSITION_CHECK)
        assert any("error" in f.lower() and "FAIL" in f for f in failures), failures
        rehearsal["operator"].set_steps(phase="traffic-50")
    finally:
        server2.ssh("sudo -n docker twin-fault bazbii-gateway 0")
    time.sleep(20)  # the errors leave the (floored) 15 s window
    judged = up(rehearsal, phase="traffic-100")
    assert not judged.denied, judged.output[-3000:] + diagnostics(rehearsal)
