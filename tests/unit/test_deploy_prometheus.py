"""deploy/prometheus: the rules load (`promtool check rules`) and do what they say on synthetic
series (`promtool test rules`), and every series they read is one the server exports."""

from __future__ import annotations

import re
import subprocess

import yaml
from prometheus_client import CollectorRegistry

from service.metrics import HealthCollector, ServerMetrics
from tests.conftest import ROOT, promtool_path

RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool_path(), *args], capture_output=True, text=True, cwd=RULES.parent)


def test_rules_load() -> None:
    check = promtool("check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr


def test_rules_pass_their_unit_tests() -> None:
    run = promtool("test", "rules", "rules_test.yaml")
    assert run.returncode == 0, run.stdout + run.stderr


def exported_series() -> set[str]:
    registry = CollectorRegistry()
    ServerMetrics(registry)
    registry.register(HealthCollector(ready=lambda: True, schedulers=lambda: {"m": True}))
    names = set()
    for family in registry.collect():
        names |= {sample.name for sample in family.samples} | {family.name}
    return names | {f"{n}{suffix}" for n in names for suffix in ("_total", "_bucket", "_sum", "_count")}


def test_every_series_the_rules_read_is_exported() -> None:
    exported = exported_series()
    rules = [r for group in yaml.safe_load(RULES.read_text())["groups"] for r in group["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    read = {name for r in rules for name in re.findall(r"\b(lunaserve_[a-z_]+)", r["expr"])}
    assert read and read <= exported, sorted(read - exported)
    used = {name for r in rules for name in re.findall(r"(lunaserve:[a-z_0-9:]+)", r["expr"])}
    assert used <= recorded, sorted(used - recorded)
