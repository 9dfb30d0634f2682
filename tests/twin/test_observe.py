"""The rehearsal's Prometheus takes the stack's own scrape configs: Debian's ``promtool`` accepts them with the
twin's paths, and the pod discovery stand-in gives the meta labels the stack's relabelling keeps and reads."""

from __future__ import annotations

import json
import shutil
import subprocess

import yaml

from bazbii_plan.gates import scrape_configs, scrape_targets
from tests.analysis.test_gate_config import _load, _prod
from twin.observe import pod_targets, prometheus_config

PROMTOOL = shutil.which("promtool")


def pod(name: str, ip: str, track: str, phase: str = "Running", port_name: str = "http") -> dict:
    return {"metadata": {"name": name, "namespace": "bazbii",
                         "labels": {"app.kubernetes.io/name": "api", "bazbii.io/track": track}},
            "spec": {"nodeName": "server1", "containers": [
                {"name": "api", "ports": [{"name": port_name, "containerPort": 8080}]}]},
            "status": {"phase": phase, "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}


def test_promtool_accepts_the_stacks_scrape_configs_with_the_twins_paths(tmp_path):
    config = _load(tmp_path, _prod())
    (tmp_path / "targets.json").write_text(json.dumps(scrape_targets(config.state(), config.metrics)))
    document = prometheus_config(scrape_configs(config.state(), config.metrics), tmp_path / "targets.json", tmp_path)
    (tmp_path / "api.json").write_text("[]")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(document))
    checked = subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    api = next(c for c in document["scrape_configs"] if c["job_name"] == "api")
    assert "kubernetes_sd_configs" not in api and api["file_sd_configs"][0]["files"] == [str(tmp_path / "api.json")]
    assert document["global"]["scrape_interval"] == "1s"


def test_pod_targets_carry_what_the_stacks_relabelling_reads(tmp_path):
    config = _load(tmp_path, _prod())
    api = next(c for c in scrape_configs(config.state(), config.metrics) if c["job_name"] == "api")
    read = {label for rule in api["relabel_configs"] for label in rule.get("source_labels", [])}
    groups = pod_targets({"items": [pod("api-a", "127.0.2.5", "stable"), pod("api-b", "127.0.2.6", "canary"),
                                    {**pod("api-c", "", "stable"), "status": {"phase": "Pending"}}]})
    assert [g["targets"] for g in groups] == [["127.0.2.5:8080"], ["127.0.2.6:8080"]]  # no address: not listed
    for group in groups:
        assert read <= set(group["labels"]), read - set(group["labels"])
    assert groups[1]["labels"]["__meta_kubernetes_pod_label_bazbii_io_track"] == "canary"
    assert groups[0]["labels"]["__meta_kubernetes_pod_container_port_name"] == "http"
