"""Operating production from where the workflows run, on the twin with the real CLI, plugins and policy pack.

Production's Prometheus runs inside a server (here: server2's own network namespace, on its 127.0.0.1),
where the runner cannot see it: ``pulumi`` and ``watch`` run in the twin's edge, as a GitHub-hosted runner
would. The stack reads the metrics over SSH through server2 (``bazbii:metrics.ssh``, with
``bazbii:sshPrivateKey``). The twin's stack gives the DNS track's ``ttl-lowered`` a live gate (the service's
error ratio and p95 over 20 s), so one cheap step is a gated step. In order:

* the runner cannot reach Prometheus, SSH to server2 can;
* with 5 % errors, ``pulumi preview`` and ``pulumi up`` of ``ttl-lowered`` evaluate the gate over SSH and
  deny it, printing its numbers; healthy, both pass it, printing them, and ``up`` applies the step from main;
* ``watch`` (the scheduled workflow's command) sees 5 % errors, commits ``dnsPhase: baseline`` to main of a
  real git remote (a bare repository) and dispatches the apply workflow; the apply workflow's commands
  (``preview --save-plan``, ``up --plan`` of main's checkout) apply it; main names what is applied;
* with Prometheus stopped, K inconclusive rounds raise an alert;
* a pull request's preview (the PR job's command: ``offline_preview --metrics config --ssh-key``) reads the
  gate of the step it proposes with the metrics reader key only, which the takeover ``pulumi up`` installed
  on server2 (``bazbii:metrics.ssh.readerPublicKey``); with that key server2 runs nothing else.

GitHub's API cannot be reached from here: the watch talks to a stand-in of it at its boundary
(testsupport/github_standin.py, served in the edge), which records the issue and dispatch calls.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from bazbii_analysis.reach import metrics_client
from bazbii_plan.facts import TRANSITION_CHECK
from bazbii_plan.gates import MetricsConfig
from testsupport.github_standin import GitHubStandIn
from testsupport.gitremote import bare_remote, clone, git, show
from twin.existing import seed_mvp
from twin.operator import TwinOperator
from twin.stack import first_steps, load_prod, twin_stack_document

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = "/usr/bin/prometheus"
# Inside server2's own network namespace: nothing else listens there, and no other run shares it.
PROMETHEUS_PORT, EXPORTER_PORT = 9090, 9101
METRICS = {"endpoint": f"http://127.0.0.1:{PROMETHEUS_PORT}", "timeoutSeconds": 5, "ssh": {"server": "server2"}}
GATE = {"window": "20s", "minSamples": 20}


@dataclass
class ServerMetrics:
    """Prometheus and the traffic exporter it scrapes, both inside server2."""

    twin: object
    workdir: Path
    processes: dict = field(default_factory=dict)

    @property
    def server(self):
        return self.twin.servers["server2"]

    def set(self, *, error_percent: float, rate: float = 20.0) -> None:
        (self.workdir / "control.json").write_text(json.dumps({"rate": rate, "errorPercent": error_percent}))

    def query(self, promql: str) -> list:
        def ask():
            response = httpx.post(f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query", data={"query": promql}, timeout=5)
            return response.json()["data"]["result"]

        return self.twin.lab.in_namespace("server2", ask)

    def wait_for(self, promql: str, predicate, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = self.query(promql)
                if result and predicate(float(result[0]["value"][1])):
                    return
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"{promql} did not settle within {timeout:g} s")

    def settle(self, error_percent: float) -> None:
        """Serve ``error_percent`` and wait until a whole 20 s window holds only that."""
        self.set(error_percent=error_percent)
        time.sleep(22)
        ratio = ('sum(rate(haproxy_backend_http_responses_total{code="5xx"}[20s]))'
                 ' / sum(rate(haproxy_backend_http_responses_total[20s]))')
        self.wait_for(ratio, lambda v: abs(v * 100 - error_percent) < 1.0)

    def start_prometheus(self) -> None:
        log = open(self.workdir / "prometheus.log", "ab")
        self.processes["prometheus"] = self.server.popen_inside(
            [PROMETHEUS, f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_for("count(up == 1)", lambda v: v == 1)

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@pytest.fixture(scope="module")
def server_metrics(twin_with_cloud):
    if not Path(PROMETHEUS).is_file():
        pytest.skip(f"{PROMETHEUS} is missing (apt-get install prometheus)")
    workdir = twin_with_cloud.workdir / "server2-metrics"  # the twin's workdir is visible inside its servers
    workdir.mkdir()
    metrics = ServerMetrics(twin_with_cloud, workdir)
    metrics.set(error_percent=0)
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: ['127.0.0.1:{EXPORTER_PORT}']\n")
    log = open(workdir / "exporter.log", "ab")
    metrics.processes["exporter"] = metrics.server.popen_inside(
        [sys.executable, "-m", "testsupport.traffic_exporter", "--listen", f"127.0.0.1:{EXPORTER_PORT}",
         "--control", str(workdir / "control.json")], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        metrics.start_prometheus()
        yield metrics
    finally:
        for name in list(metrics.processes):
            metrics.stop(name)


@dataclass
class Operated:
    operator: TwinOperator
    remote: Path  # the repository's remote: its main names what is applied
    github: GitHubStandIn
    scratch: Path
    reader_key: Path  # the pull-request job's metrics reader key (private half)

    @property
    def project(self) -> Path:
        return self.operator.workspace.project

    def merge(self, message: str, **pointers: str) -> None:
        """A pull request setting ``pointers`` merged to main (the stack file, as `pulumi config set` writes it)."""
        self.operator.set_steps(**pointers)
        git(self.project, "commit", "--quiet", "-am", message)
        git(self.project, "push", "--quiet", "origin", "main")

    def apply_main(self) -> str:
        """What .github/workflows/up.yml runs: main's checkout, a preview with the pack saved as the plan, up --plan."""
        git(self.project, "fetch", "--quiet", "origin", "main")
        git(self.project, "reset", "--quiet", "--hard", "FETCH_HEAD")  # what actions/checkout gives the job
        plan = self.scratch / f"plan-{time.monotonic_ns()}.json"
        preview = self.operator.pulumi("preview", "--non-interactive", "--diff", *self.operator.policy_args(),
                                       "--save-plan", str(plan))
        up = self.operator.pulumi("up", "--yes", "--non-interactive", *self.operator.policy_args(), "--plan", str(plan))
        return preview.output + up.output

    def main_value(self, key: str) -> str:
        return yaml.safe_load(show(self.remote, "main", self.operator.stack_file.name))["config"][key]

    def watch(self, *args: str) -> subprocess.CompletedProcess:
        """The watch workflow's run: a fresh checkout of main, the watch from the edge (the runner)."""
        runner = clone(self.remote, self.scratch / f"runner-{time.monotonic_ns()}")
        (runner / "venv").symlink_to((REPO / "venv").resolve())
        env = {**self.operator.workspace.env(), **self.github.env(), "PYTHONPATH": str(REPO)}
        argv = self.operator.twin.lab.edge_command([
            sys.executable, "-m", "bazbii_analysis.watch", "--stack", self.operator.stack, "--repo", str(runner),
            "--interval", "1", "--window", "10s", "--min-samples", "20", "--period", "10m", *args])
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        print(done.stdout[-6000:], done.stderr[-3000:])
        return done


@pytest.fixture(scope="module")
def operated(twin_with_cloud, server_metrics, tmp_path_factory):
    twin = twin_with_cloud
    prod = load_prod()
    scratch = tmp_path_factory.mktemp("operate")
    reader_key = scratch / "metrics-reader"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops@laptop", "-f", str(reader_key)],
                   check=True, capture_output=True)
    document = twin_stack_document(prod, {name: s.address for name, s in twin.servers.items()}, steps=first_steps(prod))
    document["config"]["bazbii:metrics"] = {
        **METRICS, "ssh": {**METRICS["ssh"], "readerPublicKey": Path(f"{reader_key}.pub").read_text().strip()}}
    (ttl_lowered,) = [s for s in document["config"]["bazbii:plan"]["dns"]["steps"] if s["name"] == "ttl-lowered"]
    ttl_lowered["criteria"] = GATE
    operator = TwinOperator.create(twin, document=document)
    github = twin.lab.in_edge(lambda: GitHubStandIn(repo="bazbii/bazbii-infra", token="ghs_twin_token").start())
    try:
        seed_mvp(twin, operator.document, operator.secrets)
        # The repository: the operator's checkout is the program with its stack file, main on a bare remote.
        remote = bare_remote(scratch / "git")
        project = operator.workspace.project
        (project / ".gitignore").write_text("venv\n__pycache__/\n*.pyc\n")
        git(project, "init", "--quiet", "--initial-branch=main")
        git(project, "add", "-A")
        git(project, "commit", "--quiet", "-m", "the program and the twin stack at the first steps")
        git(project, "remote", "add", "origin", str(remote))
        git(project, "push", "--quiet", "origin", "main")
        taken_over = operator.judged("up")  # the first update takes over the running MVP
        assert not taken_over.denied, taken_over.output[-5000:]
        yield Operated(operator, remote, github, scratch, reader_key)
    finally:
        github.stop()
        operator.cleanup()


def _gate_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if "live gate of dns step 'ttl-lowered'" in line
            or "error-ratio [service]" in line or "p95-latency [service]" in line]


def test_the_runner_cannot_reach_prometheus_but_ssh_through_server2_can(operated):
    twin = operated.operator.twin

    def direct(url):
        try:
            httpx.get(url, timeout=3)
            return "reached"
        except httpx.HTTPError as exc:
            return type(exc).__name__

    for url in (f"http://{twin.servers['server2'].address}:{PROMETHEUS_PORT}/-/ready",
                f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready"):
        assert twin.lab.in_edge(direct, url) == "ConnectError", url
    metrics = MetricsConfig.model_validate(METRICS)
    servers = {"server2": {"address": twin.servers["server2"].address}}

    def over_ssh():
        with metrics_client(metrics, servers, twin.operator_private_key()) as client:
            return client.scalar("count(up == 1)")

    sessions = len(twin.servers["server2"].sessions())
    assert twin.lab.in_edge(over_ssh) == 1
    new = twin.servers["server2"].sessions()[sessions:]
    assert len(new) == 1 and "curl" in new[0], new  # one session as deploy, running curl on server2


def test_a_failing_gate_is_evaluated_over_ssh_and_denies_preview_and_up(operated, server_metrics):
    operator = operated.operator
    server_metrics.settle(error_percent=5)
    calls = len(operator.twin.cloudflare_requests())
    operator.set_steps(dnsPhase="ttl-lowered")
    try:
        preview = operator.judged("preview")
        up = operator.judged("up", "--skip-preview")
    finally:
        operator.set_steps(dnsPhase="baseline")
    for judged in (preview, up):
        assert judged.denied
        (failure,) = judged.check_failures(TRANSITION_CHECK)
        measured = re.search(r"live gate of dns step 'ttl-lowered': FAIL +error-ratio \[service\]: ([0-9.]+) % "
                             r"\(threshold <= 1\.00 %\) over 20s, (\d+) requests", failure)
        assert measured and 4.0 <= float(measured.group(1)) <= 6.0 and int(measured.group(2)) >= 300, failure
        lines = _gate_lines(judged.output)
        print("\n".join(lines))
        assert "live gate of dns step 'ttl-lowered' FAILED" in lines, judged.output[-4000:]
        assert any(line.startswith("PASS         p95-latency [service]: 5 ms (threshold <= 600 ms) over 20s")
                   for line in lines), lines
    assert [c for c in operator.twin.cloudflare_requests()[calls:] if c["method"] != "GET"] == []
    assert operator.outputs()["steps"]["dns"] == "baseline"


def test_a_passing_gate_shows_its_numbers_and_up_applies_the_step_from_main(operated, server_metrics):
    server_metrics.settle(error_percent=0)
    operated.merge("dnsPhase: ttl-lowered", dnsPhase="ttl-lowered")
    output = operated.apply_main()
    lines = _gate_lines(output)
    print("\n".join(lines))
    assert lines.count("live gate of dns step 'ttl-lowered' PASSED") >= 2, output[-5000:]  # at preview and at up
    assert any(line.startswith("PASS         error-ratio [service]: 0.00 % (threshold <= 1.00 %) over 20s, ")
               for line in lines), lines
    assert operated.operator.outputs()["steps"]["dns"] == "ttl-lowered" == operated.main_value("bazbii:dnsPhase")


def test_the_watch_rolls_back_through_git_and_the_apply_workflow_applies_main(operated, server_metrics):
    operator, github = operated.operator, operated.github
    server_metrics.settle(error_percent=5)
    done = operated.watch("--duration", "2m")
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-2000:]
    assert "BREACH: rolling dns back one step through git, ttl-lowered -> baseline" in done.stdout
    assert operated.main_value("bazbii:dnsPhase") == "baseline"  # main names the rollback...
    assert operator.outputs()["steps"]["dns"] == "ttl-lowered"  # ...which nothing applied yet
    assert github.dispatches == [{"workflow": "up.yml", "ref": "main"}]
    assert any(i["title"] == "bazbii watch: rolled back dns ttl-lowered -> baseline" for i in github.issues)
    message = git(operated.remote, "log", "-1", "--format=%an: %s", "main").strip()
    assert message == "bazbii watch: Roll back dns: bazbii:dnsPhase ttl-lowered -> baseline"
    # the dispatched apply workflow applies main: a rollback is never held back by the metrics
    operated.apply_main()
    record = operator.outputs()["appliedRecord"]
    assert record["steps"]["dns"] == "baseline" == operated.main_value("bazbii:dnsPhase")


def test_the_watch_alerts_when_the_metrics_fall_silent(operated, server_metrics):
    server_metrics.stop("prometheus")
    before = len(operated.github.issues)
    done = operated.watch("--max-inconclusive", "2", "--duration", "2m")
    assert done.returncode == 3, done.stdout[-4000:]
    assert "SILENT: dns at 'baseline': 2 consecutive rounds could not tell" in done.stdout
    (issue,) = operated.github.issues[before:]
    assert issue["title"] == "bazbii watch: metrics silent for dns at 'baseline'"
    assert f"over ssh deploy@{operated.operator.twin.servers['server2'].address}:22 is unreachable" in issue["body"]
    assert "Failed to connect to 127.0.0.1 port 9090" in issue["body"]
    assert operated.main_value("bazbii:dnsPhase") == "baseline" and len(operated.github.dispatches) == 1


def test_a_pull_requests_preview_reads_the_gate_with_the_reader_key_which_runs_nothing_else(operated, server_metrics):
    operator, twin = operated.operator, operated.operator.twin
    if "prometheus" not in server_metrics.processes:  # the silence test stopped it
        server_metrics.start_prometheus()
    server_metrics.settle(error_percent=5)
    base = yaml.safe_load(show(operated.remote, "main", operator.stack_file.name))
    assert base["config"]["bazbii:dnsPhase"] == "baseline"
    proposed = {**base, "config": {**base["config"], "bazbii:dnsPhase": "ttl-lowered"}}
    files = {}
    for name, document in (("base", base), ("proposed", proposed)):
        files[name] = operated.scratch / f"{name}-{time.monotonic_ns()}.yaml"
        files[name].write_text(yaml.safe_dump(document, sort_keys=False))
    sessions = len(twin.servers["server2"].sessions())
    argv = twin.lab.edge_command([  # what preview.yml runs, from the runner's side
        sys.executable, "-m", "offline_preview", "--base", str(files["base"]), "--config", str(files["proposed"]),
        "--base-age", "1h", "--policy-config", str(REPO / "policies" / "config.json"),
        "--metrics", "config", "--ssh-key", str(operated.reader_key)])
    done = subprocess.run(argv, cwd=REPO, env={**operator.workspace.env(), "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=600)
    print(done.stdout[-5000:], done.stderr[-2000:])
    assert re.search(r"FAIL +error-ratio \[service\]: [4-6]\.\d\d % \(threshold <= 1\.00 %\) over 20s, \d+ requests",
                     done.stdout), done.stdout[-5000:]
    assert done.returncode != 0  # the gate denies the step
    new = twin.servers["server2"].sessions()[sessions:]
    assert new and all("curl" in session for session in new), new

    other = twin.lab.run("edge", [
        "ssh", "-F", "/dev/null", "-i", str(operated.reader_key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        f"deploy@{twin.servers['server2'].address}", "cat ~/.ssh/authorized_keys"], timeout=60)
    assert other.returncode == 1 and "bazbii-metrics-reader: refused" in other.stderr, other
    assert "ssh-ed25519" not in other.stdout
