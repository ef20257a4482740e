"""deploy/compose and deploy/grafana: what the compose stack mounts exists, Prometheus scrapes the
lunaserve service with the project's rules, Grafana is provisioned with the dashboard, and the
dashboard reads only series the rules record or the server exports (no Docker engine runs here;
tests/e2e/test_observe.py runs every panel's expression against a real Prometheus)."""

from __future__ import annotations

import json
import re

import yaml

from tests.conftest import ROOT
from tests.unit.test_deploy_prometheus import RULES, exported_series

COMPOSE = ROOT / "deploy" / "compose"
DASHBOARD = ROOT / "deploy" / "grafana" / "lunaserve.json"


def test_compose_mounts_exist_and_prometheus_scrapes_lunaserve() -> None:
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    services = compose["services"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (COMPOSE / source).resolve().exists(), volume
    assert (COMPOSE / services["lunaserve"]["build"]["context"] / "Dockerfile").resolve().is_file()
    prometheus = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    mounted = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    (rule_file,) = prometheus["rule_files"]
    assert (COMPOSE / mounted[rule_file]).resolve() == RULES.resolve()
    (target,) = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in services and services["lunaserve"]["ports"][0].endswith(f":{port}")


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["grafana"]["volumes"]}
    provider = yaml.safe_load((COMPOSE / "grafana/provisioning/dashboards/lunaserve.yaml").read_text())
    folder = mounts[provider["providers"][0]["options"]["path"]]
    assert (COMPOSE / folder / DASHBOARD.name).resolve() == DASHBOARD.resolve()
    datasource = yaml.safe_load((COMPOSE / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_dashboard_reads_only_recorded_or_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(set(titles)) == len(titles) >= 10
    used_recorded = {n for e in exprs for n in re.findall(r"(lunaserve:[a-z_0-9:]+)", e)}
    used_raw = {n for e in exprs for n in re.findall(r"\b(lunaserve_[a-z_]+)", e)}
    assert used_recorded <= recorded and used_raw <= exported_series()
    panels = " ".join(titles).lower()
    for topic in ("requests per second", "latency", "queue depth", "queued tokens", "batch size", "padding",
                  "rejections", "versions"):  # fmt: skip
        assert topic in panels, topic
