"""The metrics reader's forced command accepts exactly the metrics client's requests (no server needed).

Through a real sshd and Prometheus: tests/ssh/test_metrics_reader.py.
"""

from __future__ import annotations

import shlex

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bazbii_analysis.metrics_reader import MARKER, Refused, allowed_curl, authorized_keys_line, main
from bazbii_analysis.prometheus import PrometheusClient
from bazbii_analysis.sshtransport import curl_command

ENDPOINT = "http://prometheus.bazbii.internal:9090"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx1gFm1mq0vJdXbbp2Zl1rJ3OtqIbJ9pmnn6b9Q5Xkz ops@laptop"


def _client_requests(promql: str, endpoint: str = ENDPOINT) -> list[httpx.Request]:
    """What PrometheusClient sends for an instant and a range query (answered empty here)."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": []}})

    with PrometheusClient(endpoint, transport=httpx.MockTransport(answer)) as client:
        client.query(promql)
        client.query_range(promql, 0, 60, 15)
    return sent


@settings(max_examples=60, deadline=None)
@given(promql=st.text(min_size=1, max_size=200), timeout=st.floats(min_value=0.5, max_value=60))
def test_every_request_of_the_metrics_client_is_allowed(promql, timeout):
    for request in _client_requests(promql):
        command = curl_command(request, timeout)
        assert allowed_curl(command, ENDPOINT) == shlex.split(command)


def test_an_endpoint_with_a_path_prefix_and_a_trailing_slash():
    for request in _client_requests("up", ENDPOINT + "/prom/"):
        assert allowed_curl(curl_command(request, 5), ENDPOINT + "/prom/")


@pytest.mark.parametrize("change, reason", [
    (lambda c: c.replace("/api/v1/query", "/api/v1/admin/tsdb/delete_series"), "is not one of"),
    (lambda c: c.replace(ENDPOINT, "http://127.0.0.1:10250"), "is not one of"),
    (lambda c: c.replace("--output -", "--output /etc/passwd"), "POSTed PromQL form"),
    (lambda c: c.replace("@-", "@/etc/shadow"), "POSTed PromQL form"),
    (lambda c: c.replace("POST", "DELETE"), "POSTed PromQL form"),
    (lambda c: c.replace("--max-time 5", "--max-time 1e9"), "outside"),
    (lambda c: c.replace("--max-time 5", "--max-time nan"), "outside"),
    (lambda c: c.replace("--max-time 5", "--max-time five"), "not a number"),
    (lambda c: c + "; rm -rf /", "only the metrics client's curl request"),
    (lambda c: c + " --config /tmp/x", "only the metrics client's curl request"),
    (lambda c: c.replace("curl", "wget", 1), "only the metrics client's curl request"),
    (lambda c: c + " '", "not a command line"),
    (lambda c: "", "only the metrics client's curl request"),
])
def test_anything_else_is_refused_with_its_reason(change, reason):
    (request, _range) = _client_requests("up")
    command = change(curl_command(request, 5))
    with pytest.raises(Refused, match=reason):
        allowed_curl(command, ENDPOINT)


def test_the_forced_command_says_why_it_refuses_in_one_line_and_runs_nothing(capsys):
    assert main([ENDPOINT], {"SSH_ORIGINAL_COMMAND": "id"}) == 1
    assert capsys.readouterr().err == f"{MARKER}: refused: only the metrics client's curl request may run with this key\n"
    assert main([], {}) == 2 and "expected one argument" in capsys.readouterr().err


def test_the_line_drops_the_keys_own_comment_and_refuses_what_it_cannot_quote():
    line = authorized_keys_line(KEY, ENDPOINT, "/home/deploy/.bazbii")
    assert line == ('restrict,command="python3 /home/deploy/.bazbii/metrics-reader.py '
                    f"'{ENDPOINT}'\" {' '.join(KEY.split()[:2])} {MARKER}")
    with pytest.raises(ValueError, match="OpenSSH public key"):
        authorized_keys_line("ssh-ed25519 ***", ENDPOINT)
    with pytest.raises(ValueError, match="letters, digits"):
        authorized_keys_line(KEY, 'http://x:9090/"; rm -rf ~; "')
