"""The twin's servers: separate machines on one host, reached over SSH as the program reaches production.

Each test runs the program's own scripts where it can (the spec check, the PostgreSQL install fragment's
guard) through a real sshd into the server's own network and mount namespaces.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bazbii_plan.models import Server
from components.server import spec_check_script
from twin.environment import Twin
from twin.lab import NETNS_DIR, Lab
from twin.server import Spec
from twin.serverinit import SHIM_PLACES

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    with Twin.start_new(tmp_path_factory.mktemp("twin"), specs={"server1": Spec(2, 4, 100), "server2": Spec(2, 4, 100)},
                        addresses={"server1": "127.0.1.1", "server2": "127.0.1.2"}) as started:
        started.fresh_files = {name: server.written_files() for name, server in started.servers.items()}
        yield started


def test_a_fresh_server_has_only_the_documented_files_of_its_own(twin):
    """What a fresh twin server has beyond this machine's files is docs/engine-and-twin.md's list, no more."""
    from tests.twin.test_differences import documented

    expected = set(documented("**Files a fresh twin server has**"))
    programs = {place for place in SHIM_PLACES}
    for name, files in twin.fresh_files.items():
        assert files - programs == expected, name
        assert programs <= files, name  # the documented programs stand where the real ones would


def test_each_server_is_its_own_machine_reached_as_deploy_with_sudo(twin):
    one, two = twin.servers["server1"], twin.servers["server2"]
    first = one.ssh("id -un; sudo -n id -un; hostname -I 2>/dev/null || ip -4 -br addr show eth0")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[:2] == ["deploy", "root"]
    assert "127.0.1.1" in first.stdout
    # a file written on one server is not on the other, nor on this machine
    assert one.ssh("echo one | sudo -n tee /etc/bazbii-twin-probe >/dev/null").returncode == 0
    assert two.ssh("test -e /etc/bazbii-twin-probe").returncode == 1
    assert not Path("/etc/bazbii-twin-probe").exists()
    # the same port on two servers: each its own 127.0.0.1 and its own *:port
    for server in (one, two):
        started = server.ssh("nohup python3 -m http.server 18080 --bind 0.0.0.0 >/dev/null 2>&1 & sleep 0.7; "
                             "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18080/")
        assert started.stdout.strip() == "200", started.stderr
    cross = one.ssh("curl -s -o /dev/null -w '%{http_code}' http://127.0.1.2:18080/")
    assert cross.stdout.strip() == "200"


def test_the_programs_spec_check_follows_the_console(twin):
    server = twin.servers["server1"]
    declared = Server(address="127.0.1.1", vcpu=2, memory_gb=4, disk_gb=100, roles=[])
    check = spec_check_script("server1", declared)
    ok = server.ssh("bash -s", stdin=check)
    assert ok.returncode == 0, ok.stderr
    assert "server1 matches 2 vCPU / 4 GB / 100 GB" in ok.stdout and not ok.stderr
    resized = Server(address="127.0.1.1", vcpu=4, memory_gb=8, disk_gb=200, roles=[])
    before = server.ssh("bash -s", stdin=spec_check_script("server1", resized))
    assert before.returncode == 1, before.stderr
    # every mismatch is named, the disk's too (mawk printed big sums in a form the test could not read)
    assert "server1 does not match its declared spec" in before.stderr  # its own name, not os-release's NAME
    for problem in ("vcpu is 2, declared 4", "memory is", "disk is 107 GB, declared 200 GB"):
        assert problem in before.stderr
    assert "create or resize server1 in the KonohaVPS console" in before.stderr
    server.resize(vcpu=4, memory_gb=8, disk_gb=200)  # the operator's console action
    try:
        after = server.ssh("bash -s", stdin=spec_check_script("server1", resized))
        assert after.returncode == 0, after.stderr
    finally:
        server.resize(vcpu=2, memory_gb=4, disk_gb=100)


def test_postgresql_and_pgbouncer_run_as_services_without_systemd(twin):
    server = twin.servers["server2"]
    fresh = server.ssh("sudo -n find /etc/postgresql /var/lib/postgresql -mindepth 1 | wc -l; "
                       "systemctl is-active postgresql@15-main; echo $?")
    assert fresh.stdout.split()[:1] == ["0"] and fresh.stdout.split()[-1] == "3"  # no cluster, inactive
    created = server.ssh("sudo -n bash -c 'pg_createcluster 15 main --port=5432 >/dev/null && "
                         "systemctl enable --now postgresql@15-main && systemctl is-active postgresql@15-main && "
                         "runuser -u postgres -- psql -XtAc \"SELECT 1\"'")
    assert created.returncode == 0, created.stderr
    assert created.stdout.split() == ["active", "1"]
    bouncer = server.ssh("sudo -n bash -c 'systemctl start pgbouncer && systemctl is-active pgbouncer && "
                         "systemctl reload pgbouncer && systemctl stop pgbouncer; systemctl is-active pgbouncer'")
    assert bouncer.stdout.split() == ["active", "inactive"], bouncer.stderr
    stopped = server.ssh("sudo -n systemctl disable --now postgresql@15-main; systemctl is-active postgresql@15-main")
    assert stopped.stdout.strip() == "inactive"


def test_what_cannot_run_here_says_so(twin):
    server = twin.servers["server1"]
    known = server.ssh("sudo -n apt-get update -q && sudo -n apt-get install -y -q curl docker.io cloudflared")
    assert known.returncode == 0, known.stderr
    unknown = server.ssh("sudo -n apt-get install -y -q some-package-nobody-installed")
    assert unknown.returncode == 100
    assert "Unable to locate package some-package-nobody-installed" in unknown.stderr
    unsupported = server.ssh("docker run -d --name x registry.example.com/someone/else:1.0")
    assert unsupported.returncode != 0 and "not known to the twin" in unsupported.stderr


def test_the_gateway_container_serves_its_health_path_and_forwards(twin):
    server = twin.servers["server1"]
    upstream = server.ssh("nohup python3 -m http.server 18090 --bind 127.0.0.1 >/dev/null 2>&1 & echo started")
    assert upstream.returncode == 0
    run = server.ssh("sudo -n docker run -d --name bazbii-gateway --restart unless-stopped --label bazbii.gateway=v1 "
                     "-p 8080:8080 -e PORT=8080 -e API_UPSTREAMS=http://127.0.0.1:18090 "
                     "registry.example.com/bazbii/gateway:1.4.2 && sleep 1 && "
                     "curl -fsS http://127.0.0.1:8080/healthz && echo && curl -s -o /dev/null -w '%{http_code}' "
                     "http://127.0.0.1:8080/ && echo && "
                     "sudo -n docker inspect -f '{{index .Config.Labels \"bazbii.gateway\"}}' bazbii-gateway")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-3:] == ["ok", "200", "v1"]
    removed = server.ssh("sudo -n docker rm -f bazbii-gateway >/dev/null; curl -s -m 2 http://127.0.0.1:8080/healthz; echo $?")
    assert removed.stdout.strip() != "0"


def test_two_labs_at_once_never_collide_and_leave_nothing(tmp_path):
    first, second = Lab(tmp_path / "a"), Lab(tmp_path / "b")
    with first, second:
        assert first.lab_id != second.lab_id
        names = [first.namespace("edge"), second.namespace("edge")]
        assert all((NETNS_DIR / n).exists() for n in names)
        # the same address in both labs, each reachable from its own edge only
        for lab in (first, second):
            listen = lab.popen("server1", ["python3", "-m", "http.server", "18081", "--bind", "127.0.1.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            lab.in_edge(lambda: None)
            from twin.lab import wait_for_port
            wait_for_port(lab, "edge", "127.0.1.1", 18081, 10, listen)
    assert not any((NETNS_DIR / n).exists() for n in names)
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert first.lab_id not in listing and second.lab_id not in listing


def test_console_spec_reaches_the_server_at_once(twin):
    server = twin.servers["server2"]
    spec = json.loads(server.ssh("cat /etc/bazbii-twin/console.json").stdout)
    assert spec == {"vcpu": 2, "memoryGb": 4, "diskGb": 100, "os": "ubuntu-22.04"}
    assert server.ssh(". /etc/os-release; echo $ID $VERSION_ID").stdout.split() == ["ubuntu", "22.04"]


def test_a_units_command_line_is_expanded_as_systemd_does(tmp_path):
    """Debian's prometheus-postgres-exporter unit: ``ExecStart=/usr/bin/prometheus-postgres-exporter $ARGS``
    with ``ARGS`` from its ``EnvironmentFile`` (quoted there)."""
    from twin.hostshims.systemctl import command_line, environment_file

    settings = tmp_path / "exporter"
    settings.write_text('# managed\nDATA_SOURCE_NAME="user=prometheus host=/var/run/postgresql"\n'
                        "ARGS='--web.listen-address=127.0.1.2:9187 --disable-settings-metrics'\nEMPTY=\n")
    env = environment_file(str(settings))
    assert env["DATA_SOURCE_NAME"] == "user=prometheus host=/var/run/postgresql"
    assert command_line("/usr/bin/exporter $ARGS", env) == [
        "/usr/bin/exporter", "--web.listen-address=127.0.1.2:9187", "--disable-settings-metrics"]
    assert command_line("/usr/bin/exporter ${ARGS} $EMPTY --x=${EMPTY}y", env) == [
        "/usr/bin/exporter", "--web.listen-address=127.0.1.2:9187 --disable-settings-metrics", "--x=y"]
    assert environment_file(f"-{tmp_path / 'absent'}") == {}
