"""The rehearsal end to end: real servers on 127.0.1.1-3, open-loop load, the plan's first steps.

Each test runs ``python -m rehearsal`` (what ``./rehearse`` runs) as a subprocess and reads its
JSON report; shortened: the infra track up to traffic-10 (replica build + lag gate +
consistency check, a new gateway and pool, a weight change) at a lower rate and short soaks.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The reconcilers' walk (the engine's, ./rehearse's default, is tests/engine/test_rehearsal_gates.py's)
SHORT = ["--reconcilers", "--until", "traffic-10", "--rate", "40", "--soak", "4", "--baseline", "4",
         "--min-samples", "20"]


def rehearse(tmp_path: Path, *args: str, timeout: float = 150) -> tuple[int, dict, str]:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "rehearsal", "--json", "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    report = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    return done.returncode, report, done.stderr


def leftover_processes(run_dir: str) -> list[str]:
    """Processes whose command line names the run directory (nginx -p, haproxy -f, postgres -D, ...)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if run_dir in cmdline:
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def test_short_rehearsal_serves_every_request(tmp_path):
    started = time.monotonic()
    code, report, stderr = rehearse(tmp_path, *SHORT)
    assert report, stderr[-3000:]
    summary = report["summary"]
    # This walk is judged on serving every request; its p95 against a 4 s baseline of 160 requests is not (on a
    # busy CI machine that ratio alone made it exit 1 with every step passed and no request failed).
    missed = [t["target"] for t in summary["targets"] if not t["met"]]
    assert code == 0 or (code == 1 and all(m.startswith("p95") for m in missed)), (missed, stderr[-3000:])
    steps = [(s["step"], s["action"], s["outcome"]) for s in report["steps"][1:]]
    assert steps == [("server3-provisioned", "apply", "passed"), ("replica-streaming", "apply", "passed"),
                     ("gateway-on-server2", "apply", "passed"), ("traffic-10", "apply", "passed")]
    assert summary["failed"] == 0, summary["first_failures"]
    assert {"target": "0 failed requests", "value": 0, "met": True} in summary["targets"]
    # open loop at 40/s: the requests were sent whatever happened (within 10 % of the schedule)
    assert summary["requests"] >= 0.9 * 40 * sum(s["duration_s"] for s in report["steps"])
    # both pools served once traffic-10 applied, through both gateways
    served = report["steps"][-1]["served_by"]
    assert any(k.startswith("server2/") for k in served) and any(k.startswith("server1/") for k in served)
    replica = report["steps"][2]
    assert any("lag gate passed" in n for n in replica["notes"]) and any("consistency" in n for n in replica["notes"])
    assert any("gate" in line and "PASSED" in line for line in report["steps"][-1]["gate"])
    assert (tmp_path / "out" / "timeline.png").stat().st_size > 10_000
    assert leftover_processes(summary["run_dir"]) == []
    assert time.monotonic() - started < 180


def test_injected_gateway_fault_is_caught_rolled_back_and_recovers(tmp_path):
    # A higher rate than the short walk: server2 gets 10 % of it, and 20 % of those fail.
    code, report, stderr = rehearse(tmp_path, *SHORT, "--rate", "80", "--inject", "gateway-5xx@traffic-10")
    rows = [(s["step"], s["action"], s["outcome"]) for s in report.get("steps", [{}])[1:]]
    assert code == 0, (rows, report.get("summary"), stderr[-3000:])
    assert rows[-3:] == [("traffic-10", "apply", "failed"), ("traffic-10", "rollback", "recovered"),
                         ("traffic-10", "retry", "passed")]
    failed_gate = "\n".join(report["steps"][-3]["gate"])
    assert "FAIL" in failed_gate and "pool server2" in failed_gate
    rollback = report["steps"][-2]
    assert any("server1 100, server2 0" in n for n in rollback["notes"])
    # the fault produced failed requests, and only through server2's gateway
    failures = report["summary"]["first_failures"]
    assert failures and all(f["gateway"] == "server2" and f["status"] == 500 for f in failures), failures
    assert report["steps"][-1]["failed"] == 0
    assert {"target": "rollback of traffic-10 recovers (< 1 % errors) within two soak intervals",
            "value": "recovered", "met": True} in report["summary"]["targets"]
    assert leftover_processes(report["summary"]["run_dir"]) == []


def test_interrupt_stops_every_process(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "rehearsal", "--out", str(tmp_path / "out"), *SHORT],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = None
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        lines.append(line)
        if "run directory " in line:
            run_dir = line.rsplit("run directory ", 1)[1].strip()
        if line.startswith("[infra] replica-streaming") or time.monotonic() > deadline:
            break
    assert run_dir, "".join(lines)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1, "".join(lines) + rest
    assert "interrupted" in rest
    assert leftover_processes(run_dir) == []


@pytest.mark.parametrize("walk", [[], ["--reconcilers"]], ids=["engine", "reconcilers"])
@pytest.mark.parametrize("args, message", [
    (["--inject", "gateway-5xx@canary-10"], "gateway-5xx cannot show at canary-10; valid steps: traffic-10, traffic-50, traffic-100"),
    (["--inject", "meteor@traffic-10"], "expected FAULT@STEP"),
    (["--until", "traffic-7"], "--until 'traffic-7': no such step"),
    (["--rate", "0"], "--rate must be 1..2000"),
])
def test_bad_arguments_exit_2_with_one_line_and_start_nothing(tmp_path, walk, args, message):
    code, report, stderr = rehearse(tmp_path, *walk, *args, timeout=60)
    assert code == 2
    assert message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--soak", "4"], "--soak only applies with --reconcilers"),
    (["--min-samples", "20", "--keep-run-dir"], "--min-samples, --keep-run-dir only applies with --reconcilers"),
    (["--reconcilers", "--time-scale", "60"], "--time-scale only applies without --reconcilers"),
    (["--reconcilers", "--engine"], "--engine and --reconcilers are two walks"),
])
def test_an_option_of_the_other_walk_is_refused_not_ignored(tmp_path, args, message):
    code, report, stderr = rehearse(tmp_path, *args, timeout=60)
    assert code == 2
    assert message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()
