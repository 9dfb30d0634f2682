"""The generated server configs pass each server's own config check (no server is started)."""

from __future__ import annotations

import subprocess

from rehearsal import configs


def check(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_split_map_gives_each_pool_its_slice():
    assert configs.cumulative({"server1": {"weight": 90}, "server2": {"weight": 10}}) == {"server1": 90, "server2": 100}
    assert configs.cumulative({"server1": {"weight": 0}, "server2": {"weight": 100}}) == {"server1": 0, "server2": 100}


def test_haproxy_config_is_valid(tmp_path):
    (tmp_path / "split.map").write_text("server1 90\nserver2 100\n")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(configs.haproxy_cfg(tmp_path, {"server1": "127.0.1.1", "server2": "127.0.1.2"},
                                       "127.0.1.1:18080", "127.0.1.1:18404", 18090))
    check(["haproxy", "-c", "-f", str(cfg)])


def test_nginx_config_is_valid_with_and_without_the_fault(tmp_path):
    upstream = tmp_path / "api_upstream.conf"
    upstream.write_text("server 127.0.1.1:18001 weight=90;\nserver 127.0.1.1:18002 weight=10;\n")
    for fault in (0.0, 0.2):
        conf = tmp_path / "nginx.conf"
        conf.write_text(configs.nginx_conf(tmp_path, upstream, "server2", "127.0.1.2", 18090, fault))
        check(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"])
        assert ("return 500" in conf.read_text()) == (fault > 0)


def test_dns_configs_are_valid(tmp_path):
    (tmp_path / "bazbii.example.zone").write_text(configs.zone_text(
        {"direct": {"name": "direct", "type": "A", "content": "127.0.1.1", "ttl": 3600},
         "www": {"name": "www", "type": "CNAME", "content": "api.bazbii.example", "ttl": 1, "proxied": True}},
        1, "127.0.1.1", lambda ttl: max(1, round(ttl / 120))))
    assert "direct 30 IN A 127.0.1.1" in (tmp_path / "bazbii.example.zone").read_text()
    (tmp_path / "nsd.conf").write_text(configs.nsd_conf(tmp_path, "127.0.1.1@15353"))
    check(["nsd-checkconf", str(tmp_path / "nsd.conf")])
    check(["nsd-checkzone", "bazbii.example", str(tmp_path / "bazbii.example.zone")])
    (tmp_path / "unbound.conf").write_text(configs.unbound_conf(tmp_path, "127.0.1.1@15354", "127.0.1.1@15353"))
    check(["unbound-checkconf", str(tmp_path / "unbound.conf")])


def test_prometheus_config_is_valid(tmp_path):
    (tmp_path / "api.json").write_text("[]")
    (tmp_path / "postgres.json").write_text("[]")
    (tmp_path / "prometheus.yml").write_text(configs.prometheus_yml(tmp_path, "127.0.1.1:18404", "127.0.1.1:19127"))
    check(["promtool", "check", "config", str(tmp_path / "prometheus.yml")])
